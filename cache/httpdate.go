package cache

import (
	"net/http"
	"time"
)

// parseDate parses an HTTP-date as http.ParseTime does, with a fast path for the IMF-fixdate form
// every current server sends ("Mon, 02 Jan 2006 15:04:05 GMT"): a Date header is parsed for every
// answer the cache considers, and time.Parse costs about a microsecond and a half there. Anything
// the fast path does not recognise exactly goes to http.ParseTime.
func parseDate(s string) (time.Time, bool) {
	if t, ok := parseIMFFixdate(s); ok {
		return t, true
	}
	t, err := http.ParseTime(s)
	return t, err == nil
}

// parseIMFFixdate parses exactly "Www, DD Mmm YYYY HH:MM:SS GMT" with a valid calendar date and
// time; it does not check that the weekday matches, as time.Parse does not either.
func parseIMFFixdate(s string) (time.Time, bool) {
	if len(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
		s[19] != ':' || s[22] != ':' || s[25:] != " GMT" || !validWeekday(s[:3]) {
		return time.Time{}, false
	}
	day, ok1 := digits(s[5:7])
	year, ok2 := digits(s[12:16])
	hour, ok3 := digits(s[17:19])
	minute, ok4 := digits(s[20:22])
	sec, ok5 := digits(s[23:25])
	month := monthOf(s[8:11])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || month == 0 || hour > 23 || minute > 59 || sec > 59 ||
		day < 1 || day > daysIn(month, year) {
		return time.Time{}, false
	}
	return time.Date(year, month, day, hour, minute, sec, 0, time.UTC), true
}

func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func validWeekday(s string) bool {
	switch s {
	case "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun":
		return true
	}
	return false
}

func monthOf(s string) time.Month {
	switch s {
	case "Jan":
		return time.January
	case "Feb":
		return time.February
	case "Mar":
		return time.March
	case "Apr":
		return time.April
	case "May":
		return time.May
	case "Jun":
		return time.June
	case "Jul":
		return time.July
	case "Aug":
		return time.August
	case "Sep":
		return time.September
	case "Oct":
		return time.October
	case "Nov":
		return time.November
	case "Dec":
		return time.December
	}
	return 0
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
