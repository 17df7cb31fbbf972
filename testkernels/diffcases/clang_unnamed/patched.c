/* clang's unnamed local data: with -fsanitize=shift, the sanitizer's source
 * location and type records are private globals (.L__unnamed_N, writable:
 * the runtime marks a location reported) with no symbol, in their own
 * .data..L__unnamed_N section. The fix changes shl; it is carried with a
 * fresh copy of the records it references. Compiled by the test with clang. */
int shl(int a, int b)
{
    if (b < 0)
        return 0;
    return a << b;
}

int other(int a) { return a + 1; }
