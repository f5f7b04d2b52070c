package sources

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages"
)

func newGenerate(t testing.TB, c *GenerateConfig) stages.Source {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	var f stages.Factory
	for _, x := range All() {
		if x.Type == "generate" {
			f = x
		}
	}
	src, err := f.NewSource(testSettings(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestGenerateValidate(t *testing.T) {
	tests := []struct {
		name   string
		c      GenerateConfig
		fields []string
	}{
		{"defaults", *NewGenerateConfig(), nil},
		{"negative", GenerateConfig{Count: -1, Interval: -time.Second}, []string{"count", "interval"}},
		{"unknown placeholder", GenerateConfig{Message: "{{seq}} {{nope}}"}, []string{"message"}},
		{"unclosed braces are literal", GenerateConfig{Message: "{{seq"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fieldsOf(tt.c.Validate()); !reflect.DeepEqual(got, tt.fields) {
				t.Errorf("fields = %q, want %q", got, tt.fields)
			}
		})
	}
}

func TestGenerateCount(t *testing.T) {
	c := NewGenerateConfig()
	c.Count = 2500
	if !c.Finite() {
		t.Fatal("a count makes the source finite")
	}
	src := newGenerate(t, c)
	ctx := context.Background()
	var sizes []int
	total := 0
	for {
		b, err := src.Read(ctx)
		if errors.Is(err, stages.ErrEndOfInput) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(b.Records))
		for _, r := range b.Records {
			if want := fmt.Sprintf(`{"seq":%d,"msg":"hello from etld"}`, total); string(r.Raw) != want || r.Offset != int64(total) || r.Origin.Path != "" || r.Origin.Source != "src" {
				t.Fatalf("record %d = %q offset %d origin %+v", total, r.Raw, r.Offset, r.Origin)
			}
			total++
		}
	}
	if want := []int{1024, 1024, 452}; !reflect.DeepEqual(sizes, want) {
		t.Errorf("batch sizes = %v, want %v", sizes, want)
	}
}

func TestGenerateTemplateAndInterval(t *testing.T) {
	c := &GenerateConfig{Count: 3, Interval: time.Millisecond, Message: "n={{seq}} at {{ ts }}!"}
	src := newGenerate(t, c)
	ctx := context.Background()
	for i := range 3 {
		b, err := src.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Records) != 1 {
			t.Fatalf("batch of %d records with an interval, want 1", len(b.Records))
		}
		raw := string(b.Records[0].Raw)
		prefix := fmt.Sprintf("n=%d at ", i)
		if !strings.HasPrefix(raw, prefix) || !strings.HasSuffix(raw, "!") {
			t.Fatalf("record = %q", raw)
		}
		if _, err := time.Parse(time.RFC3339Nano, strings.TrimSuffix(strings.TrimPrefix(raw, prefix), "!")); err != nil {
			t.Fatalf("ts in %q: %v", raw, err)
		}
	}
	if _, err := src.Read(ctx); !errors.Is(err, stages.ErrEndOfInput) {
		t.Fatalf("Read after count = %v", err)
	}
}

func TestGenerateForeverCancel(t *testing.T) {
	src := newGenerate(t, &GenerateConfig{Interval: time.Hour, Message: "x"})
	ctx, cancel := context.WithCancel(context.Background())
	if b, err := src.Read(ctx); err != nil || len(b.Records) != 1 {
		t.Fatalf("first Read = %v, %v; want one record at once", b, err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := src.Read(ctx)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
}
