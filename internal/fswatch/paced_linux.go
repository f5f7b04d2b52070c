package fswatch

import (
	"errors"
	"sync"
	"time"
	"unsafe"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Pace is how long the paced reader waits after a read that returned
// events before it reads again: the events of that time arrive in one
// read. 20 ms adds at most that to the delay of a line, against the
// second or so a follow pipeline takes anyway.
const Pace = 20 * time.Millisecond

// paced reads an inotify instance and gives the events fsnotify would
// give, read at another pace.
//
// fsnotify's descriptor is in Go's netpoller: every event the kernel
// queues wakes the thread blocked in epoll_wait, which then wakes the
// reading goroutine, dispatch, the subscribers and the sink, each often
// on another thread. With 10,000 followed files written a line a second
// each, that was ~250 wake-up chains a second and most of the daemon's
// CPU; pacing fsnotify's consumer does not help, as the wake-ups come
// from the descriptor, not the reads (measured: epoll waits doubled).
// Here the descriptor is outside the netpoller: one goroutine blocks in
// poll(2) while nothing happens and, once events come, reads them in
// bulk at most every Pace, so a busy directory costs ~1/Pace wake-up
// chains a second whatever its event rate (the same 10,000 files: 11.3 %
// of a core -> 8.5 %).
//
// The events are fsnotify's (the same operations for the same masks), so
// the dispatch and its subscribers do not tell the two apart.
type paced struct {
	fd     int
	wake   [2]int // a pipe: Close writes to it to end poll(2)
	events chan Event
	errs   chan error
	done   chan struct{} // closed by Close
	exited chan struct{} // closed when read returns

	mu    sync.Mutex
	wds   map[int32]string // watch descriptor -> path added
	paths map[string]int32
	// joined keeps, per watch, the event paths made so far (directory
	// and name): a busy directory's files are named again and again, and
	// a path made once is not allocated again. Bounded by maxJoined.
	joined map[int32]map[string]string
	once   sync.Once

	// moved holds the last IN_MOVED_FROMs (cookie and path), for the
	// IN_MOVED_TO that follows each to name its old path (Event.From).
	// The kernel queues the two halves of a rename one after the other;
	// a few suffice, as in fsnotify. Used by the reading goroutine only.
	moved    [movedKept]movedFrom
	movedIdx int
}

type movedFrom struct {
	cookie uint32
	path   string
}

// movedKept is how many IN_MOVED_FROMs paced keeps for their pair.
const movedKept = 16

// maxJoined bounds the paths joined keeps per watch; past it the watch's
// are dropped and made again as events name them.
const maxJoined = 1 << 16

func newPaced() (backend, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	p := &paced{fd: fd, events: make(chan Event, eventBuffer), errs: make(chan error, 1),
		done: make(chan struct{}), exited: make(chan struct{}), wds: map[int32]string{}, paths: map[string]int32{},
		joined: map[int32]map[string]string{}}
	if err := unix.Pipe2(p.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, err
	}
	go p.read()
	return p, nil
}

// eventBuffer bounds the events read and not yet dispatched: the reader
// waits for dispatch beyond it, and the kernel queues the rest (up to
// fs.inotify.max_queued_events, then an overflow that makes every
// subscriber look again).
const eventBuffer = 4096

// addMask is what fsnotify's Add watches for.
const addMask = unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CREATE | unix.IN_ATTRIB | unix.IN_MODIFY |
	unix.IN_MOVE_SELF | unix.IN_DELETE | unix.IN_DELETE_SELF

func (p *paced) Add(path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	wd, err := unix.InotifyAddWatch(p.fd, path, addMask)
	if err != nil {
		return &fsnotifyPathError{path, err}
	}
	if old, ok := p.wds[int32(wd)]; ok && old != path {
		delete(p.paths, old) // the same inode under another name: the kernel's watch is one
	}
	p.wds[int32(wd)], p.paths[path] = path, int32(wd)
	return nil
}

func (p *paced) Remove(path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	wd, ok := p.paths[path]
	if !ok {
		return fsnotify.ErrNonExistentWatch
	}
	delete(p.paths, path)
	delete(p.wds, wd)
	delete(p.joined, wd)
	if _, err := unix.InotifyRmWatch(p.fd, uint32(wd)); err != nil {
		return &fsnotifyPathError{path, err}
	}
	return nil
}

func (p *paced) WatchList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := make([]string, 0, len(p.paths))
	for path := range p.paths {
		l = append(l, path)
	}
	return l
}

func (p *paced) Events() (<-chan fsnotify.Event, <-chan Event) { return nil, p.events }
func (p *paced) Errors() <-chan error                          { return p.errs }

// Close ends the reader (waking it from poll(2)) and closes the
// descriptors; Events and Errors are closed.
func (p *paced) Close() error {
	p.once.Do(func() {
		close(p.done)
		unix.Write(p.wake[1], []byte{0})
		<-p.exited
		unix.Close(p.wake[0])
		unix.Close(p.wake[1])
		unix.Close(p.fd)
	})
	return nil
}

// read is the reader goroutine: poll(2) until the instance has events,
// read them all, hand them to dispatch, wait Pace, and again.
func (p *paced) read() {
	defer close(p.exited)
	defer close(p.errs)
	defer close(p.events)
	buf := make([]byte, 64<<10) // room for ~2,000 events of names up to 16 bytes
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}, {Fd: int32(p.wake[0]), Events: unix.POLLIN}}
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		n, err := unix.Read(p.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			// Nothing queued: block this thread (not the netpoller) until
			// there is, or Close.
			for {
				if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
					break
				}
			}
			if p.closing() {
				return
			}
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			p.send(Event{}, err)
			return
		}
		if !p.parse(buf[:n]) {
			return
		}
		if n > len(buf)/2 {
			continue // more may be queued than one read takes: no pause
		}
		pace.Reset(Pace)
		select {
		case <-pace.C:
		case <-p.done:
			return
		}
	}
}

func (p *paced) closing() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// parse hands the events in b to dispatch; false when closed meanwhile.
func (p *paced) parse(b []byte) bool {
	for off := 0; off+unix.SizeofInotifyEvent <= len(b); {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&b[off]))
		name := b[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(raw.Len)]
		off += unix.SizeofInotifyEvent + int(raw.Len)
		for i, c := range name { // the kernel pads the name with NULs
			if c == 0 {
				name = name[:i]
				break
			}
		}
		mask := raw.Mask
		if mask&unix.IN_Q_OVERFLOW != 0 {
			if !p.send(Event{}, fsnotify.ErrEventOverflow) {
				return false
			}
			continue
		}
		p.mu.Lock()
		path, ok := p.wds[raw.Wd]
		if mask&unix.IN_IGNORED != 0 { // the watch is gone (removed, or its directory deleted)
			if ok && p.paths[path] == raw.Wd {
				delete(p.paths, path)
			}
			delete(p.wds, raw.Wd)
			delete(p.joined, raw.Wd)
		}
		if ok && len(name) > 0 {
			path = p.join(raw.Wd, path, name)
		}
		p.mu.Unlock()
		if !ok {
			continue
		}
		ev := Event{Event: fsnotify.Event{Name: path, Op: opOf(mask)}}
		if raw.Cookie != 0 && len(name) > 0 {
			ev.From = p.pairMove(raw.Cookie, mask, path)
		}
		if ev.Op != 0 {
			if !p.send(ev, nil) {
				return false
			}
		}
	}
	return true
}

// pairMove keeps the path of an IN_MOVED_FROM, and returns for an
// IN_MOVED_TO the path its IN_MOVED_FROM had ("" when not seen: the
// file came from a directory not watched).
func (p *paced) pairMove(cookie, mask uint32, path string) string {
	switch {
	case mask&unix.IN_MOVED_FROM != 0:
		p.moved[p.movedIdx] = movedFrom{cookie, path}
		p.movedIdx = (p.movedIdx + 1) % movedKept
	case mask&unix.IN_MOVED_TO != 0:
		for _, m := range p.moved {
			if m.cookie == cookie {
				return m.path
			}
		}
	}
	return ""
}

// join returns dir (watch wd's path) joined with name, made once per
// name (see joined). p.mu is held.
func (p *paced) join(wd int32, dir string, name []byte) string {
	m := p.joined[wd]
	if path, ok := m[string(name)]; ok { // no allocation for the lookup
		return path
	}
	if m == nil || len(m) >= maxJoined {
		if p.joined == nil {
			p.joined = map[int32]map[string]string{}
		}
		m = make(map[string]string)
		p.joined[wd] = m
	}
	path := dir
	if path != "/" {
		path += "/"
	}
	path += string(name)
	m[path[len(path)-len(name):]] = path // the key shares path's bytes
	return path
}

// opOf maps an inotify mask to fsnotify's operations, as fsnotify does.
func opOf(mask uint32) fsnotify.Op {
	var op fsnotify.Op
	if mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		op |= fsnotify.Create
	}
	if mask&(unix.IN_DELETE|unix.IN_DELETE_SELF) != 0 {
		op |= fsnotify.Remove
	}
	if mask&unix.IN_MODIFY != 0 {
		op |= fsnotify.Write
	}
	if mask&(unix.IN_MOVE_SELF|unix.IN_MOVED_FROM) != 0 {
		op |= fsnotify.Rename
	}
	if mask&unix.IN_ATTRIB != 0 {
		op |= fsnotify.Chmod
	}
	return op
}

// send hands an event or an error to dispatch; false when closed first.
func (p *paced) send(ev Event, err error) bool {
	if err != nil {
		select {
		case p.errs <- err:
		case <-p.done:
			return false
		}
		return true
	}
	select {
	case p.events <- ev:
		return true
	case <-p.done:
		return false
	}
}

// fsnotifyPathError is an error about path, worded like fsnotify's.
type fsnotifyPathError struct {
	path string
	err  error
}

func (e *fsnotifyPathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *fsnotifyPathError) Unwrap() error { return e.err }
