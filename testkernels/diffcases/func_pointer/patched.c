/* The fix installs a pointer to an unchanged function: the patch must point
 * at the original (a reference), not carry a copy. */
typedef int (*handler_t)(int);

__attribute__((noinline)) static int default_handler(int x) { return x + 100; }
__attribute__((noinline)) int strict_handler(int x) { return x < 0 ? -1 : x; }

handler_t current;

__attribute__((noinline)) void install(int strict)
{
    current = strict ? strict_handler : default_handler;
}

int dispatch(int x) { return current ? current(x) : 0; }
