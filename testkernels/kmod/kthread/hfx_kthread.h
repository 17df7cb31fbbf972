/* SPDX-License-Identifier: GPL-2.0 */
/* State of the hfx_kthread worker, shared with hand-written livepatches. */
#ifndef HFX_KTHREAD_H
#define HFX_KTHREAD_H
#include <linux/atomic.h>

struct hfx_worker_state {
	atomic_t release_req;
	int version;
};

#endif
