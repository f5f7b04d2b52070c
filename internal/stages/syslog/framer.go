package syslog

import (
	"bytes"
	"fmt"
)

// framer splits a stream (a TCP or unix connection) into messages. Each
// message is framed on its own (RFC 6587): octet counting when it starts
// with a length and a space (`57 <34>1 ...`), else newline framing up to
// the next '\n'. One ambiguity is settled for newline framing: `1 ` then a
// digit or '-' is an RFC 5424 message without PRI (version 1), not a
// 1-byte counted frame.
//
// The received bytes are in buf[r:w]; next returns messages that alias
// buf, valid until the next fill.
type framer struct {
	max  int
	buf  []byte
	r, w int

	// An over-long newline-framed message is skipped up to its newline:
	// long keeps its first max bytes for the bad record, skipped counts
	// the bytes.
	skipping bool
	long     []byte
	skipped  int
}

func newFramer(maxMsg int) *framer {
	// Room for the longest frame with its header, and at least 64 KiB so
	// that one read brings many small messages.
	return &framer{max: maxMsg, buf: make([]byte, max(64<<10, maxMsg+16))}
}

// space returns the free tail to read into, moving the unread bytes to
// the front first when that makes room.
func (f *framer) space() []byte {
	if f.r > 0 && (f.w == len(f.buf) || f.r == f.w || f.r > len(f.buf)/2) {
		f.w = copy(f.buf, f.buf[f.r:f.w])
		f.r = 0
	}
	return f.buf[f.w:]
}

// frame kinds returned by next.
type frameKind int

const (
	frameLined frameKind = iota - 1 // counted found the message newline framed (internal)
	frameMore                       // no complete message: read more
	frameMsg                        // msg is one message
	frameLong                       // msg is the first max bytes of a longer message of length n
	frameFatal                      // the framing cannot be trusted: reject msg (err) and close the connection
)

// next returns the next message in the buffer.
func (f *framer) next() (kind frameKind, msg []byte, n int, err error) {
	for {
		data := f.buf[f.r:f.w]
		if f.skipping {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				f.skipped += len(data)
				f.r = f.w
				return frameMore, nil, 0, nil
			}
			f.skipped += i
			f.r += i + 1
			f.skipping = false
			return frameLong, f.long, f.skipped, nil
		}
		if len(data) == 0 {
			return frameMore, nil, 0, nil
		}
		// Empty lines (and the newline some senders put after a counted
		// frame) carry no message.
		if c := data[0]; c == '\n' || c == '\r' || c == 0 {
			f.r++
			continue
		}
		if c := data[0]; c >= '1' && c <= '9' {
			k, msg, n, err := f.counted(data)
			if k != frameLined {
				return k, msg, n, err
			}
		}
		return f.lined(data)
	}
}

// counted frames an octet-counted message at data[0] (a digit 1-9). It
// returns frameLined when data is newline framed after all.
func (f *framer) counted(data []byte) (frameKind, []byte, int, error) {
	n, i := 0, 0
	for ; i < len(data) && data[i] >= '0' && data[i] <= '9'; i++ {
		if i == 9 { // 10 digits or more: no length we would take
			return frameFatal, data[:i+1], 0, fmt.Errorf("declared message length %s... is over max_message_bytes (%d); connection closed", data[:i+1], f.max)
		}
		n = n*10 + int(data[i]-'0')
	}
	if i == len(data) || (data[i] == ' ' && i+1 == len(data)) {
		return frameMore, nil, 0, nil
	}
	if data[i] != ' ' {
		return frameLined, nil, 0, nil
	}
	if i == 1 && n == 1 && (data[2] == '-' || data[2] >= '0' && data[2] <= '9') {
		return frameLined, nil, 0, nil // `1 2024-...`: RFC 5424 without PRI
	}
	if n > f.max {
		head := data[:min(len(data), 64)]
		return frameFatal, head, n, fmt.Errorf("declared message length %d is over max_message_bytes (%d); connection closed", n, f.max)
	}
	start := i + 1
	if len(data)-start < n {
		return frameMore, nil, 0, nil
	}
	msg := data[start : start+n]
	f.r += start + n
	return frameMsg, trimEOL(msg), 0, nil
}

// lined frames a newline-terminated message.
func (f *framer) lined(data []byte) (frameKind, []byte, int, error) {
	i := bytes.IndexByte(data, '\n')
	switch {
	case i < 0 && len(data) <= f.max:
		return frameMore, nil, 0, nil
	case i < 0:
		f.long = append(f.long[:0], data[:f.max]...)
		f.skipping, f.skipped = true, len(data)
		f.r = f.w
		return frameMore, nil, 0, nil
	case i > f.max:
		f.r += i + 1
		return frameLong, data[:f.max], i, nil
	}
	f.r += i + 1
	return frameMsg, trimEOL(data[:i]), 0, nil
}

// rest returns what is left at the end of the stream: a frame cut by the
// disconnect (nil when none).
func (f *framer) rest() []byte {
	if f.skipping {
		f.skipping = false
		return f.long
	}
	data := f.buf[f.r:f.w]
	for len(data) > 0 && (data[0] == '\n' || data[0] == '\r' || data[0] == 0) {
		data = data[1:]
	}
	f.r = f.w
	if len(data) == 0 {
		return nil
	}
	return data[:min(len(data), f.max)]
}

// trimEOL removes a trailing "\n", "\r\n" or NUL.
func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}
