package stages

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of b (page-aligned) that are mapped in.
func resident(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+4095)/4096)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestPrefaultMapsThePagesIn(t *testing.T) {
	const pages = 64
	m, err := unix.Mmap(-1, 0, 2*pages*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	a, b := m[:pages*4096], m[pages*4096:]
	if n := resident(t, a); n != 0 {
		t.Fatalf("fresh mapping: %d pages resident, want 0", n)
	}
	if err := unix.Madvise(a[:4096], unix.MADV_POPULATE_WRITE); err != nil {
		t.Skipf("kernel without MADV_POPULATE_WRITE (5.14+): %v", err)
	}
	Prefault(a[100:]) // an unaligned start: the partial first page is left out
	if n := resident(t, a); n != pages {
		t.Fatalf("after prefault: %d of %d pages resident", n, pages)
	}
	if n := resident(t, b); n != 0 {
		t.Fatalf("prefault reached past its slice: %d pages resident", n)
	}
	Prefault(b[:prefaultMin-1]) // too small to be worth it
	if n := resident(t, b); n != 0 {
		t.Fatalf("prefault of %d bytes mapped %d pages, want none", prefaultMin-1, n)
	}
	for i := range a {
		if a[i] != 0 {
			t.Fatalf("byte %d is %d after prefault, want 0", i, a[i])
		}
	}
}
