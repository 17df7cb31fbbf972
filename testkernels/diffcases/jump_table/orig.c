/* A dense switch compiled to a jump table (.rodata.<fn>); the fix changes
 * one case. The other switch's table is unchanged. */
__attribute__((noinline)) int io_port_handler(int port, int v)
{
    switch (port) {
    case 0: return v + 1;
    case 1: return v * 3;
    case 2: return v ^ 0x55;
    case 3: return v - 9;
    case 4: return v << 2;
    case 5: return v >> 1;
    case 6: return ~v;
    case 7: return v & 0xf0;
    default: return -1;
    }
}

__attribute__((noinline)) int pci_cfg_handler(int reg, int v)
{
    switch (reg) {
    case 0: return v | 1;
    case 1: return v * 7;
    case 2: return v ^ 0xaa;
    case 3: return v - 3;
    case 4: return v << 3;
    case 5: return v >> 2;
    case 6: return -v;
    case 7: return v & 0x0f;
    default: return 0;
    }
}
