// Command refgen writes etld's pipeline configuration reference, rendered
// by package refdoc from the built-in stage registry. It is run by
//
//	go generate ./internal/refdoc
//
// and refuses to write a reference with undocumented options.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/etld/etld/internal/refdoc"
	"github.com/etld/etld/internal/stages/builtin"
)

func main() {
	out := flag.String("o", "", "file to write (default: standard output)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "refgen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	reg := builtin.Registry()
	if probs := refdoc.Problems(reg); len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(os.Stderr, "refgen:", p)
		}
		return fmt.Errorf("%d undocumented option(s); add the missing tags", len(probs))
	}
	md, err := refdoc.Markdown(reg)
	if err != nil {
		return err
	}
	if out == "" {
		_, err = os.Stdout.Write(md)
		return err
	}
	return os.WriteFile(out, md, 0o644)
}
