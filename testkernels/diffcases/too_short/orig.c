__attribute__((noinline)) int ident(int x) { return x; }
int use(int x) { return ident(x) * 2; }
