package rotate

import "testing"

func TestOwns(t *testing.T) {
	const active = "/var/log/etld/out.log"
	tests := []struct {
		name string
		want bool
	}{
		{active, true},
		{active + ".000001", true},
		{active + ".1234567", true},
		{active + ".000002.gz", true},
		{active + ".000002.gz.tmp", true},
		{active + ".recover.tmp", true},
		{SealedName(active, 42), true},
		{SealedName(active, 42) + ".gz", true},
		{active + ".", false},
		{active + ".gz", false},
		{active + ".bak", false},
		{active + ".0001x", false},
		{active + "2", false},
		{active + "x.000001", false},
		{"/var/log/etld/out.lo", false},
		{"/var/log/etld/other.log", false},
		{"/var/log/out.log", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := Owns(active, tt.name); got != tt.want {
			t.Errorf("Owns(%q, %q) = %v, want %v", active, tt.name, got, tt.want)
		}
	}
}
