package redislimit

import (
	"testing"
	"time"
	_ "time/tzdata" // the zones below, on any system
)

// Periods tile time in every zone, whatever its changes do (half-hour
// shifts on Lord Howe Island, skipped midnights in Santiago and Havana):
// every instant lies in the period start returns, and the period after
// [s, next(s)) starts at next(s).
func TestCalendarPeriodsTile(t *testing.T) {
	for _, name := range []string{"Australia/Lord_Howe", "Europe/Paris", "America/New_York", "Asia/Kolkata", "America/Santiago", "America/Havana", "UTC"} {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []Period{Hourly, Daily, Weekly, Monthly} {
			from := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
			bad := 0
			for u := from; u.Before(from.AddDate(1, 0, 0)) && bad < 3; u = u.Add(10 * time.Minute) {
				s := p.start(u.In(loc))
				e := p.next(s)
				if s.After(u) || !u.Before(e) {
					t.Errorf("%s %v: %v lies outside its period [%v, %v)", name, p, u.UTC(), s.UTC(), e.UTC())
					bad++
					continue
				}
				if s2 := p.start(e.In(loc)); !s2.Equal(e) {
					t.Errorf("%s %v: period [%v, %v) is followed by one starting at %v", name, p, s.UTC(), e.UTC(), s2.UTC())
					bad++
				}
			}
		}
	}
}
