int table_ready;
__attribute__((constructor)) static void setup(void) { table_ready = 1; }
__attribute__((noinline)) int ready(void) { return table_ready; }
