/* A constant argument changes (0x800 -> 0x8ff) in a call to an ordinary
 * function: that is a real change, not a __LINE__ change. */
extern void set_limit(int lo, int hi);

__attribute__((noinline)) int setup_x2apic(void)
{
    set_limit(0x800, 0x8ff);
    return 0;
}
