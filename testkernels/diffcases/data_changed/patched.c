int max_vcpus = 128;
__attribute__((noinline)) int vcpus_ok(int n) { return n <= max_vcpus; }
