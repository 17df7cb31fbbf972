__attribute__((noinline)) int ident(int x) { return x + 1; }
int use(int x) { return ident(x) * 2; }
