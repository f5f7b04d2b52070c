package stages

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefaultMin is the smallest new buffer worth a prefault: below it
// the page faults it saves cost less than the system call.
const prefaultMin = 32 << 10

// Prefault maps in the pages of b, new memory (NewReadBuffer's fresh)
// that a read is about to fill entirely, with one
// madvise(MADV_POPULATE_WRITE) instead of one page fault per 4 KiB page
// on the first write. Pass only the bytes about to be written: mapping
// more adds to the RSS of a source whose reads fill a buffer in several
// steps, or never. A fault is a round trip through the kernel, which
// costs 10-15 µs on a virtual machine such as the development VM (the
// populate is 1.5-2 µs a page there): a passthrough's first batches took
// about 700 faults on the source's goroutine, the one W1's wall time
// waits on. Best effort: a kernel before 5.14 refuses the advice, and
// the pages then fault in as before.
func Prefault(b []byte) {
	if len(b) < prefaultMin {
		return
	}
	const page = 4096
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := (p + page - 1) &^ (page - 1) // madvise wants an aligned start
	hi := (p + uintptr(len(b))) &^ (page - 1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(b[lo-p:hi-p], unix.MADV_POPULATE_WRITE)
}
