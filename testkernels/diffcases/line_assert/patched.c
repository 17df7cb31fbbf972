#include <assert.h>
#include <stdint.h>

/* Queues. */


int queue_pop(int *q, unsigned *head, unsigned tail)
{
    assert(*head != tail);
    int v = q[*head % 64];
    *head += 1;
    return v;
}
