/* Fixup code in the function's own section: inline assembly puts the
 * error path in `.subsection 1` of .text.read_word, after the end of the
 * function symbol, and jumps there with a rel32 the assembler resolves
 * itself. The fix changes read_word: its fixup travels with it. */
int read_word(const int *p, int *err)
{
    int v;
    asm volatile("1:  movl (%[p]), %[v]\n"
                 "    testl %[v], %[v]\n"
                 "    %{disp32%} js 3f\n"
                 "2:\n"
                 "    .subsection 1\n"
                 "3:  movl $-14, %[v]\n"
                 "    movl $1, (%[e])\n"
                 "    jmp 2b\n"
                 "    .previous\n"
                 : [v] "=&r"(v)
                 : [p] "r"(p), [e] "r"(err)
                 : "memory", "cc");
    return v + 2;
}

int other_word(const int *p) { return *p + 3; }
