package sources

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etld/etld/internal/fswatch"
)

// rotateAway renames dir/app.log to dir/to, then writes a new app.log
// holding line, and returns the Moves inotify reports for that.
func rotateAway(t *testing.T, dir, to, line string) []fswatch.Move {
	t.Helper()
	path := filepath.Join(dir, "app.log")
	if err := os.Rename(path, filepath.Join(dir, to)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, line+"\n")
	return []fswatch.Move{{From: path, To: filepath.Join(dir, to)}, {To: path}}
}

// TestFollowMovesOpenInOrder: files renamed away before they were read
// are opened, and so read, in the order they left the matching name
// (an ordered merge relies on a feed's files coming in order), not in
// the order of a map.
func TestFollowMovesOpenInOrder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "line0\n")
	src := openFile(t, followConfig(path), func(s *FileSource) { s.settings.Watcher = fswatch.Disabled() })
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })
	const n = 16 // a map of so many keys gives them in no useful order
	var moves []fswatch.Move
	for k := 1; k <= n; k++ { // line0's file goes to app.log.1, line1's to app.log.2, ...
		moves = append(moves, rotateAway(t, dir, fmt.Sprintf("app.log.%d", k), fmt.Sprintf("line%d", k))...)
	}
	src.mu.Lock()
	src.followMoves(moves)
	src.mu.Unlock()
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= n+1 })
	expectQuiet(t, src)
	var escaped []string // the lines of the files renamed away unread, as read
	for _, l := range g.lines {
		if l != "line0" && l != fmt.Sprintf("line%d", n) {
			escaped = append(escaped, l)
		}
	}
	var want []string
	for k := 1; k < n; k++ {
		want = append(want, fmt.Sprintf("line%d", k))
	}
	if !slices.Equal(escaped, want) || len(g.lines) != n+1 {
		t.Fatalf("lines %q: want %q in this order, and line0 and line%d, each once", g.lines, want, n)
	}
}

// TestFollowMovesNameReused: a name that a file renamed away passed
// through, then removed and created again, holds another file: renamed
// on, within one notification or over several, it is not read.
func TestFollowMovesNameReused(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			writeFile(t, path, "ours\n")
			src := openFile(t, followConfig(path), func(s *FileSource) { s.settings.Watcher = fswatch.Disabled() })
			g := &got{}
			readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })
			// app.log went to app.log.rot, which was compressed (removed);
			// then another program made app.log.rot anew and renamed it
			// to other.1.
			x, y := filepath.Join(dir, "app.log.rot"), filepath.Join(dir, "other.1")
			writeFile(t, y, "foreign\n")
			moves := []fswatch.Move{{From: path, To: x}, {From: x}, {To: x}, {From: x, To: y}}
			src.mu.Lock()
			if split {
				for _, m := range moves {
					src.followMoves([]fswatch.Move{m})
				}
			} else {
				src.followMoves(moves)
			}
			src.mu.Unlock()
			expectQuiet(t, src)
			if strings.Join(g.lines, ",") != "ours" {
				t.Fatalf("lines %q, want only ours", g.lines)
			}
		})
	}
}

// TestFollowParkedFileRenamed: a file closed for max_open_files and then
// renamed to a name the glob does not match is opened again under its
// new name when it is written, with inotify reporting the rename; its
// lines are not lost.
func TestFollowParkedFileRenamed(t *testing.T) {
	_, paths, cfg := manyFiles(t, 3)
	cfg.MaxOpenFiles = 1
	src := newFile(t, cfg)
	g := readRounds(t, src, paths, 1)
	src.mu.Lock()
	var parked *tailedFile
	for _, tf := range src.files {
		if tf.parked {
			parked = tf
		}
	}
	src.mu.Unlock()
	if parked == nil {
		t.Fatal("no file parked with max_open_files 1")
	}
	old := parked.origin.Path
	renamed := old + ".old"
	if err := os.Rename(old, renamed); err != nil {
		t.Fatal(err)
	}
	appendFile(t, renamed, filepath.Base(old)+":1\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= len(paths)+1 })
	expectQuiet(t, src)
	if want := filepath.Base(old) + ":1"; !slices.Contains(g.lines, want) || len(g.lines) != len(paths)+1 {
		t.Fatalf("lines %q: want round 0 of every file and %q, each once", g.lines, want)
	}
}
