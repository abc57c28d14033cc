// Package guestcheck proves, from inside the make vmtest guest, that the kernel offers what the BPF tests rely on.
package guestcheck
