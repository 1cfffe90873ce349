/* innet's composed BMv2 pipeline: every NF as a control block, enabled per ingress port.
 *
 * Table nf_enable (contract: p4/innet.yaml) maps the ingress port to the bitmask of NFs
 * that see the port's packets (each NF's bit is `enable_mask` under programs.bmv2 in its
 * nfs/*.yaml); a port without an entry takes the default action, NoAction (none) unless the
 * controller sets another. Order: the service function forwarder (sff), measurement (cms,
 * precision), then priority classification (prio), then the router (nfrouter); without the
 * router a packet goes to the CPU port or is dropped. All NFs' defines apply (one
 * FLOW_KEY_MODE for cms and precision alike). Names are the standalone programs'
 * (InnetIngress.<nf>.<name>).
 *
 * Service chains: the forwarder classifies and dispatches first. A packet it hands to an NF
 * behind it (SFF_TO_NF) meets that NF alone in this pass and is then recirculated, its SI
 * decremented, to be dispatched again, as XDP's tail call returns to the forwarder; a prio
 * hop's queue and a PRECISION hop's takeover ride along (SFF_FIELD_LIST). A packet it
 * forwards leaves from here; one it decapsulates, or that is no chain's, goes on to the
 * port's NFs and the router. PRECISION's second pass is a resubmit for a packet the
 * forwarder left alone, a recirculation past the forwarder (sff_bypass) for one it
 * changed, and, for a PRECISION hop, the hop's own recirculation.
 */
#define INNET_COMPOSED
#include "nfrouter.p4"
#include "cms.p4"
#include "precision.p4"
#include "prio.p4"
#include "sff.p4"

const bit<8> NF_NFROUTER = 0x1;
const bit<8> NF_CMS = 0x2;
const bit<8> NF_PRECISION = 0x4;
const bit<8> NF_PRIO = 0x8;
const bit<8> NF_SFF = 0x10;

control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
    Sff() sff;
    Cms() cms;
    Precision() precision;
    Prio() prio;
    NfRouter() nfrouter;

    bit<32> ingress_port;   /* the catalog's `port` is 32 bits */

    action enable(bit<8> nfs) {
        meta.nfs = nfs;
    }

    table nf_enable {
        key = { ingress_port: exact @name("ingress_port"); }
        actions = { enable; @defaultonly NoAction; }
        default_action = NoAction();
        size = 512;
    }

    /* Pass the packet through the pipeline again, as it is now: egress recirculates it. */
    @hidden action pass_again() {
        meta.sff_recirculate = 1;
        meta.sff_recirculated = 1;
        std.egress_spec = std.ingress_port;
    }

    apply {
        bool recirculated = meta.sff_recirculated == 1;
        /* PRECISION's second pass, by resubmit or past the forwarder: the NFs saw it once */
        bool second_pass = (meta.precision_takeover == 1 && !recirculated) || meta.sff_bypass == 1;
        /* a PRECISION hop's takeover, carried by the hop's recirculation to this pass */
        bool hop_takeover = meta.precision_takeover == 1 && recirculated && meta.sff_bypass == 0;
        if (second_pass || recirculated) {
            std.ingress_port = meta.ingress_port;
            std.priority = meta.sff_priority;
        } else {
            meta.ingress_port = std.ingress_port;
        }
        meta.sff_recirculated = 0;
        ingress_port = (bit<32>)std.ingress_port;
        nf_enable.apply();
        flow_key.apply(hdr, meta, std);
        bit<8> nfs = meta.nfs;   /* the NFs this pass runs */
        if (!second_pass && ((meta.nfs & NF_SFF) != 0 || recirculated)) {
            sff.apply(hdr, meta, std);
            if (meta.sff_outcome == SFF_TO_NF) {
                nfs = meta.sff_nfs;
            } else if (meta.sff_outcome == SFF_DONE) {
                nfs = 0;
            }
        }
        if (!second_pass && (nfs & NF_CMS) != 0) {
            cms.apply(hdr, meta, std);
        }
        if ((nfs & NF_PRECISION) != 0 || hop_takeover) {
            precision.apply(hdr, meta, std);
            if (hop_takeover) {
                meta.precision_takeover = 0;
            } else if (!second_pass && meta.precision_takeover == 1 && meta.sff_outcome != SFF_TO_NF) {
                if (meta.sff_touched == 1) {   /* resubmitted otherwise */
                    meta.sff_bypass = 1;
                    meta.sff_priority = std.priority;
                    pass_again();
                }
                return;     /* this pass goes nowhere */
            }
        }
        if ((nfs & NF_PRIO) != 0) {
            prio.apply(hdr, meta, std);
        }
        if (meta.sff_outcome == SFF_TO_NF) {
            meta.sff_priority = std.priority;
            pass_again();
        } else if (meta.sff_outcome == SFF_DONE) {
            return;
        } else if ((nfs & NF_NFROUTER) != 0) {
            nfrouter.apply(hdr, meta, std);
        } else {
            to_cpu_or_drop(std);
        }
    }
}

INNET_SWITCH;
