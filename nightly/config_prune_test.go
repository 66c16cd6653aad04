package nightly

import "testing"

// SCALR_BACKUP_PRUNE=off leaves forget and prune out of the pass (a host
// whose storage key may not delete); on is the default.
func TestLoadConfigPrune(t *testing.T) {
	for v, skip := range map[string]bool{"": false, "on": false, "true": false, "off": true, "false": true} {
		c, err := LoadConfig(func(k string) string {
			switch k {
			case "SCALR_BACKUP_PRUNE":
				return v
			case "SCALR_BACKUP_HOST":
				return "h1"
			}
			return ""
		})
		if err != nil {
			t.Fatalf("SCALR_BACKUP_PRUNE=%q: %v", v, err)
		}
		o := c.PassOptions()
		if o.SkipForget != skip || o.SkipPrune != skip {
			t.Errorf("SCALR_BACKUP_PRUNE=%q: skip forget %v, prune %v; want %v", v, o.SkipForget, o.SkipPrune, skip)
		}
	}
	if _, err := LoadConfig(func(k string) string {
		return map[string]string{"SCALR_BACKUP_PRUNE": "sometimes", "SCALR_BACKUP_HOST": "h1"}[k]
	}); err == nil {
		t.Error("SCALR_BACKUP_PRUNE=sometimes: no error")
	}
}
