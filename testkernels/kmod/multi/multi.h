/* SPDX-License-Identifier: GPL-2.0 */
#ifndef HFX_MULTI_H
#define HFX_MULTI_H
int hfx_multi_a(int x);
int hfx_multi_b(int x);
#endif
