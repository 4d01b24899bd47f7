//! Every backend passes the same suite.

braid_store::conformance_suite!(memory, Harness::memory());
braid_store::conformance_suite!(fs, Harness::fs());
braid_store::conformance_suite!(optional pg_s3, Harness::pg_s3().await);
braid_store::conformance_suite!(optional pg_dir, Harness::pg_dir().await);
