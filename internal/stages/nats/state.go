package nats

import (
	"encoding/json"
	"fmt"
	"slices"
)

// seqSet is a set of stream sequences kept as sorted, disjoint, inclusive
// ranges: a consumer delivers mostly runs of consecutive sequences, so a
// checkpoint of a million unacknowledged messages is a handful of ranges.
type seqSet [][2]uint64

// add adds seq; cheap when seq extends the last range (the usual case).
func (s *seqSet) add(seq uint64) {
	r := *s
	if n := len(r); n > 0 {
		last := &r[n-1]
		switch {
		case seq == last[1]+1:
			last[1] = seq
			return
		case seq >= last[0] && seq <= last[1]:
			return
		case seq > last[1]:
			*s = append(r, [2]uint64{seq, seq})
			return
		}
	}
	*s = s.union(seqSet{{seq, seq}})
}

// has reports whether seq is in the set.
func (s seqSet) has(seq uint64) bool {
	i, _ := slices.BinarySearchFunc(s, seq, func(r [2]uint64, v uint64) int {
		switch {
		case r[1] < v:
			return -1
		case r[0] > v:
			return 1
		}
		return 0
	})
	return i < len(s) && s[i][0] <= seq && seq <= s[i][1]
}

// remove removes seq.
func (s *seqSet) remove(seq uint64) {
	r := *s
	for i, x := range r {
		if seq < x[0] {
			return
		}
		if seq > x[1] {
			continue
		}
		switch {
		case x[0] == x[1]:
			*s = slices.Delete(r, i, i+1)
		case seq == x[0]:
			r[i][0]++
		case seq == x[1]:
			r[i][1]--
		default:
			*s = slices.Insert(r, i+1, [2]uint64{seq + 1, x[1]})
			(*s)[i][1] = seq - 1
		}
		return
	}
}

// below removes every sequence up to floor.
func (s *seqSet) below(floor uint64) {
	r := *s
	i := 0
	for i < len(r) && r[i][1] <= floor {
		i++
	}
	r = r[i:]
	if len(r) > 0 && r[0][0] <= floor {
		r[0][0] = floor + 1
	}
	*s = slices.Clone(r)
}

// union returns the union of s and o.
func (s seqSet) union(o seqSet) seqSet {
	all := append(slices.Clone(s), o...)
	slices.SortFunc(all, func(a, b [2]uint64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	var out seqSet
	for _, r := range all {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// len is the number of sequences in the set.
func (s seqSet) len() uint64 {
	var n uint64
	for _, r := range s {
		n += r[1] - r[0] + 1
	}
	return n
}

// sourceState is the checkpoint state of a nats source.
//
// Seqs are the stream sequences whose records the checkpoint holds (in
// the sinks' committed output) but that are not known to be acknowledged:
// the messages returned by Read and not acked yet, plus those a restore
// brought in and the consumer has not acked since. A restored source acks
// and skips a message in Seqs when it is delivered again, so a crash
// between a checkpoint and its acks writes nothing twice. Gen numbers the
// delivered batches: Committed acks every held batch below it.
type sourceState struct {
	Gen  uint64 `json:"gen"`
	Seqs seqSet `json:"seqs,omitempty"`
}

func (st *sourceState) encode() ([]byte, error) { return json.Marshal(st) }

func decodeState(b []byte) (sourceState, error) {
	var st sourceState
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("bad nats source state: %w", err)
	}
	for i, r := range st.Seqs {
		if r[0] > r[1] || i > 0 && r[0] <= st.Seqs[i-1][1] {
			return st, fmt.Errorf("bad nats source state: ranges not sorted and disjoint at %v", r)
		}
	}
	return st, nil
}
