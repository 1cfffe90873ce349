"""innet's BMv2 side: p4c builds, simple_switch_grpc processes, P4Runtime and Thrift clients."""
