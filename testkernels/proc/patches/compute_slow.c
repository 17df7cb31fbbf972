/* A slow compute(): threads calling it sit in usleep() below the patch's code. */
#include <unistd.h>
int compute(int x) {
    usleep(2000);
    return x * 3 + 7;
}
