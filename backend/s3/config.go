package s3

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Config says where an S3 repository lives and how to reach it.
type Config struct {
	// Endpoint is the server's host[:port], without scheme.
	Endpoint string
	// UseHTTP talks plain HTTP instead of HTTPS (local test servers).
	UseHTTP bool
	Bucket  string
	// Prefix is the folder inside the bucket, without leading or
	// trailing slashes; empty for the bucket's root.
	Prefix string
	// Region signs requests; empty lets the client ask the server
	// (GetBucketLocation) once per bucket.
	Region string
	// BucketLookup is "auto", "dns" (virtual-host style) or "path".
	BucketLookup string
	// Connections bounds the requests in flight (default 5).
	Connections int

	KeyID        string
	Secret       string
	SessionToken string

	// Without KeyID and Secret, the other credential sources restic reads,
	// in its order (see ApplyEnv): the shared credentials file
	// (CredentialsFile, "" for ~/.aws/credentials and ~/.aws/config) with
	// Profile ("" for AWS_PROFILE, else "default"); a container or
	// web-identity role (ContainerRole, when the AWS variables for one
	// are set); the instance metadata service (InstanceRole, only when
	// asked for with -o s3.instance-role=true).
	CredentialsFile string
	Profile         string
	ContainerRole   bool
	InstanceRole    bool

	// Retention, when positive, writes every object but lock files with
	// an S3 Object Lock retention until now + Retention (-o
	// s3.retention=30d or SCALR_BACKUP_RETENTION_LOCK), in RetentionMode
	// ("GOVERNANCE", the default, or "COMPLIANCE"). Create then makes the
	// bucket with Object Lock and refuses an existing bucket without it.
	Retention     time.Duration
	RetentionMode string
	// envErr is a setting from the environment that does not parse;
	// validate reports it (ApplyEnv has no error to return).
	envErr error
}

// Defaults, as restic's.
const (
	DefaultConnections = 5
)

// ParseConfig parses the part of an S3 location after "s3:", in the forms
// restic accepts:
//
//	https://HOST[:PORT]/BUCKET[/PREFIX]
//	http://HOST[:PORT]/BUCKET[/PREFIX]     (plain HTTP)
//	HOST[:PORT]/BUCKET[/PREFIX]            (HTTPS)
//	//HOST/BUCKET[/PREFIX]                 (from "s3://HOST/…", HTTPS)
//	s3.amazonaws.com/BUCKET[/PREFIX]
//
// The prefix is cleaned as a slash path. Credentials are never part of a
// location; they come from ApplyEnv.
//
// Two providers are recognised by host so that they work with no further
// setting:
//   - Cloudflare R2, ACCOUNT[.JURISDICTION].r2.cloudflarestorage.com:
//     region "auto" (R2's only region; signing with it avoids a
//     GetBucketLocation round trip) and path-style bucket lookup (the
//     location already names the bucket in the path, and R2's certificate
//     covers the account host).
//   - Backblaze B2, s3.REGION.backblazeb2.com: the region is taken from
//     the host (B2 rejects signatures for any other region) and path-style
//     lookup is used, which B2 supports for every bucket name.
//
// Anything else keeps restic's behaviour: region from the environment or
// asked from the server, bucket lookup "auto" (virtual-host style for
// AWS and Google hosts, path style elsewhere).
//
// Unlike restic, an empty bucket name is an error here, and a host that
// merely starts with "http" is not mistaken for a URL.
func ParseConfig(loc string) (Config, error) {
	var host, rest string
	useHTTP := false
	switch {
	case strings.HasPrefix(loc, "http://"), strings.HasPrefix(loc, "https://"):
		u, err := url.Parse(loc)
		if err != nil {
			// url's errors quote the whole input; keep it out.
			return Config{}, errors.New("s3: invalid URL in location")
		}
		if u.User != nil {
			return Config{}, errors.New("s3: credentials in the location are not supported; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
		}
		host, rest, useHTTP = u.Host, strings.TrimPrefix(u.Path, "/"), u.Scheme == "http"
	default:
		host, rest, _ = strings.Cut(strings.TrimPrefix(loc, "//"), "/")
	}
	if host == "" {
		return Config{}, fmt.Errorf("s3: location %q has no host", loc)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return Config{}, fmt.Errorf("s3: location %q has no bucket name (want HOST/BUCKET[/PREFIX])", loc)
	}
	// Checked here because minio-go rejects a bad name before sending any
	// request, and that error would otherwise look like a network failure
	// to the retry layer.
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return Config{}, fmt.Errorf("s3: bucket name %q in location: %w", bucket, err)
	}
	if prefix != "" {
		prefix = strings.Trim(path.Clean(prefix), "/")
		if prefix == "." {
			prefix = ""
		}
	}
	cfg := Config{
		Endpoint:    host,
		UseHTTP:     useHTTP,
		Bucket:      bucket,
		Prefix:      prefix,
		Connections: DefaultConnections,
	}
	cfg.Region, cfg.BucketLookup = providerDefaults(host)
	return cfg, nil
}

// providerDefaults returns the region and bucket lookup a known provider
// needs, or ("", "auto").
func providerDefaults(endpoint string) (region, lookup string) {
	host := strings.ToLower(endpoint)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	switch {
	case strings.HasSuffix(host, ".r2.cloudflarestorage.com"):
		return "auto", "path"
	case strings.HasPrefix(host, "s3.") && strings.HasSuffix(host, ".backblazeb2.com"):
		r := strings.TrimSuffix(strings.TrimPrefix(host, "s3."), ".backblazeb2.com")
		if r != "" && !strings.Contains(r, ".") {
			return r, "path"
		}
	}
	return "", "auto"
}

// ApplyEnv fills credentials and region from the environment as restic
// does: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
// AWS_DEFAULT_REGION; for the other credential sources,
// AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE, and whether a container or
// web-identity role is configured (AWS_CONTAINER_CREDENTIALS_FULL_URI,
// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_WEB_IDENTITY_TOKEN_FILE).
// Fields already set are kept, so a provider's region found by ParseConfig
// wins over AWS_DEFAULT_REGION.
func (c *Config) ApplyEnv(getenv func(string) string) {
	set := func(field *string, name string) {
		if *field == "" {
			*field = getenv(name)
		}
	}
	set(&c.KeyID, "AWS_ACCESS_KEY_ID")
	set(&c.Secret, "AWS_SECRET_ACCESS_KEY")
	set(&c.SessionToken, "AWS_SESSION_TOKEN")
	set(&c.Region, "AWS_DEFAULT_REGION")
	set(&c.CredentialsFile, "AWS_SHARED_CREDENTIALS_FILE")
	set(&c.Profile, "AWS_PROFILE")
	if v := strings.TrimSpace(getenv("SCALR_BACKUP_RETENTION_LOCK")); v != "" && c.Retention == 0 {
		d, err := ParseRetention(v)
		if err != nil {
			c.envErr = fmt.Errorf("SCALR_BACKUP_RETENTION_LOCK=%q: %w", v, err)
		}
		c.Retention = d
	}
	for _, k := range []string{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
		if getenv(k) != "" {
			c.ContainerRole = true
		}
	}
}

// ApplyOption applies one of restic's extended options ("-o key=value"):
// s3.region, s3.bucket-lookup (auto, dns or path) and s3.connections (a
// positive number). Other keys are an error.
func (c *Config) ApplyOption(key, value string) error {
	switch key {
	case "s3.region":
		c.Region = value
	case "s3.bucket-lookup":
		switch v := strings.ToLower(value); v {
		case "auto", "dns", "path":
			c.BucketLookup = v
		default:
			return fmt.Errorf("option %s=%q: want auto, dns or path", key, value)
		}
	case "s3.connections":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return fmt.Errorf("option %s=%q: want a positive number", key, value)
		}
		c.Connections = n
	case "s3.instance-role":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("option %s=%q: want true or false", key, value)
		}
		c.InstanceRole = b
	case "s3.retention":
		d, err := ParseRetention(value)
		if err != nil {
			return fmt.Errorf("option %s=%q: %w", key, value, err)
		}
		c.Retention, c.envErr = d, nil // the option wins over the environment
	case "s3.retention-mode":
		switch v := strings.ToUpper(strings.TrimSpace(value)); v {
		case "GOVERNANCE", "COMPLIANCE":
			c.RetentionMode = v
		default:
			return fmt.Errorf("option %s=%q: want governance or compliance", key, value)
		}
	default:
		return fmt.Errorf("unknown option %q (supported: s3.region, s3.bucket-lookup, s3.connections, s3.instance-role, s3.retention, s3.retention-mode)", key)
	}
	return nil
}

// Location returns the location this configuration was parsed from, in a
// form ParseConfig accepts again, with no credentials.
func (c Config) Location() string {
	s := "s3:"
	if c.UseHTTP {
		s += "http://"
	}
	s += c.Endpoint + "/" + c.Bucket
	if c.Prefix != "" {
		s += "/" + c.Prefix
	}
	return s
}

// String describes the configuration with the secrets masked, so printing a
// Config with %v or %+v does not leak them.
func (c Config) String() string {
	return fmt.Sprintf("{Location:%s Region:%q BucketLookup:%s Connections:%d KeyID:%q Secret:%s SessionToken:%s CredentialsFile:%q Profile:%q ContainerRole:%v InstanceRole:%v Retention:%v RetentionMode:%q}",
		c.Location(), c.Region, c.BucketLookup, c.Connections, c.KeyID, mask(c.Secret), mask(c.SessionToken),
		c.CredentialsFile, c.Profile, c.ContainerRole, c.InstanceRole, c.Retention, c.RetentionMode)
}

// GoString is String, so %#v does not leak secrets either.
func (c Config) GoString() string { return "s3.Config" + c.String() }

func mask(s string) string {
	if s == "" {
		return `""`
	}
	return "***"
}

// validate checks what Open needs.
func (c Config) validate() error {
	if c.envErr != nil {
		return c.envErr
	}
	if c.Retention < 0 {
		return fmt.Errorf("s3: negative retention %v", c.Retention)
	}
	switch {
	case c.Endpoint == "":
		return errors.New("s3: no endpoint")
	case c.Bucket == "":
		return errors.New("s3: no bucket")
	case c.KeyID == "" && c.Secret == "":
		// The other sources are checked when the client is made.
	case c.KeyID == "":
		return errors.New("s3: AWS_ACCESS_KEY_ID is empty but a secret is set")
	case c.Secret == "":
		return errors.New("s3: AWS_SECRET_ACCESS_KEY is empty but a key ID is set")
	}
	switch c.BucketLookup {
	case "", "auto", "dns", "path":
	default:
		return fmt.Errorf("s3: bad bucket lookup %q: want auto, dns or path", c.BucketLookup)
	}
	return nil
}

// errNoCredentials lists every source that was looked at.
var errNoCredentials = errors.New("s3: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, " +
	"or a shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE), " +
	"or a container role (AWS_CONTAINER_CREDENTIALS_FULL_URI, …), or -o s3.instance-role=true on a cloud instance")

// credentials picks the credentials as restic's chain does, and checks
// the chosen source yields keys now, so that a missing or unreadable
// source fails before any request; errors name the source, never a key.
//
// The instance metadata service is asked only with InstanceRole: unlike
// restic, a host that is not a cloud instance (the common case here) gets
// the missing-credentials error at once instead of after the metadata
// service's time-outs, and sends nothing to the link-local address.
func (c Config) credentials() (*credentials.Credentials, error) {
	if c.KeyID != "" || c.Secret != "" {
		return credentials.NewStaticV4(c.KeyID, c.Secret, c.SessionToken), nil
	}
	file := &credentials.FileAWSCredentials{Filename: c.CredentialsFile, Profile: c.Profile}
	profile := c.Profile
	if profile == "" {
		profile = "default"
	}
	where := c.CredentialsFile
	if where == "" {
		where = "~/.aws/credentials"
	}
	if v, err := file.RetrieveWithCredContext(nil); err == nil && v.AccessKeyID != "" {
		return credentials.New(file), nil
	} else if c.CredentialsFile != "" || c.Profile != "" {
		// Asked for by name: say why it did not work.
		if err == nil {
			err = errors.New("no aws_access_key_id")
		}
		return nil, fmt.Errorf("s3: credentials file %s, profile %s: %w", where, profile, err)
	}
	if c.ContainerRole || c.InstanceRole {
		iam := &credentials.IAM{}
		if _, err := iam.Retrieve(); err != nil {
			return nil, fmt.Errorf("s3: role credentials: %w", err)
		}
		return credentials.New(iam), nil
	}
	return nil, errNoCredentials
}

// ParseRetention parses a retention period: a whole number of days
// ("30d"), a Go duration ("36h", "90s"), or days followed by a Go duration
// ("1d12h"). Zero turns retention off; negative periods are refused.
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	var d time.Duration
	if days, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("invalid retention %q: want days like 30d or a duration like 36h", s)
		}
		d, s = time.Duration(n)*24*time.Hour, rest
	}
	if s != "" {
		g, err := time.ParseDuration(s)
		if err != nil || g < 0 {
			return 0, fmt.Errorf("invalid retention %q: want days like 30d or a duration like 36h", s)
		}
		d += g
	}
	return d, nil
}
