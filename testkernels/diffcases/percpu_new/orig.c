/* A fix adding a per-CPU variable (DEFINE_PER_CPU: .data..percpu): per-CPU
 * areas are laid out at load, a patch cannot add one: refused
 * (new-percpu-data), naming the variable. */
#include "kstyle.h"
int count;

int account(int x)
{
    count += x;
    return count;
}
