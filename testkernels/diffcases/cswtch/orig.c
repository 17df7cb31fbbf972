/* gcc turns this switch into a lookup table CSWTCH.N (a read-only static
 * local); the fix changes a value: the table is copied with the function. */
__attribute__((noinline)) int irq_for_slot(int slot)
{
    switch (slot) {
    case 0: return 11;
    case 1: return 10;
    case 2: return 5;
    case 3: return 9;
    case 4: return 3;
    case 5: return 4;
    default: return -1;
    }
}
