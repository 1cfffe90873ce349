/* innet's composed BMv2 pipeline: every NF as a control block, enabled per ingress port.
 *
 * Table nf_enable (contract: p4/innet.yaml) maps the ingress port to the bitmask of NFs
 * that see the port's packets (each NF's bit is `enable_mask` under programs.bmv2 in its
 * nfs/*.yaml); a port without an entry takes the default action, NoAction (none) unless the
 * controller sets another. Order: measurement (cms, precision), then priority
 * classification (prio), then the router (nfrouter); without the router a packet goes to
 * the CPU port or is dropped. All NFs' defines apply (one FLOW_KEY_MODE for cms and
 * precision alike). Names are the standalone programs' (InnetIngress.<nf>.<name>).
 */
#define INNET_COMPOSED
#include "nfrouter.p4"
#include "cms.p4"
#include "precision.p4"
#include "prio.p4"

const bit<8> NF_NFROUTER = 0x1;
const bit<8> NF_CMS = 0x2;
const bit<8> NF_PRECISION = 0x4;
const bit<8> NF_PRIO = 0x8;

control InnetIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    FlowKey() flow_key;
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

    apply {
        /* a PRECISION takeover's second pass was counted by the measurement NFs already */
        bool second_pass = meta.precision_takeover == 1;
        if (second_pass) {
            std.ingress_port = meta.ingress_port;
        } else {
            meta.ingress_port = std.ingress_port;
        }
        ingress_port = (bit<32>)std.ingress_port;
        nf_enable.apply();
        flow_key.apply(hdr, meta, std);
        if (!second_pass && (meta.nfs & NF_CMS) != 0) {
            cms.apply(hdr, meta, std);
        }
        if ((meta.nfs & NF_PRECISION) != 0) {
            precision.apply(hdr, meta, std);
            if (!second_pass && meta.precision_takeover == 1) {
                return;     /* resubmitted: this pass goes nowhere */
            }
        }
        if ((meta.nfs & NF_PRIO) != 0) {
            prio.apply(hdr, meta, std);
        }
        if ((meta.nfs & NF_NFROUTER) != 0) {
            nfrouter.apply(hdr, meta, std);
        } else {
            to_cpu_or_drop(std);
        }
    }
}

INNET_SWITCH;
