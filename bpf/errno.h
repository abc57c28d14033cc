/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* The errno values the programs test for (vmlinux.h has no macros). */
#ifndef PKTSTAT_ERRNO_H
#define PKTSTAT_ERRNO_H
#define EEXIST 17
#endif
