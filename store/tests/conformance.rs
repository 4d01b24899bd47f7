//! Every backend passes the same suite.

braid_store::conformance_suite!(memory, Harness::memory());
braid_store::conformance_suite!(fs, Harness::fs());
