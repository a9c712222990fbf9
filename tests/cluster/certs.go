package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is what the control plane's processes and clients share, kept under
// DATA/pki so a restart on the same data directory keeps working with the
// data etcd already holds (service-account tokens, the CA in ConfigMaps).
type pki struct {
	Dir           string
	CACert        string // ca.crt: signs the serving cert; also the client CA
	CAKey         string
	ServingCert   string // apiserver.crt for 127.0.0.1, localhost, kubernetes.default...
	ServingKey    string
	SAKey         string // sa.key: service-account signing key (RSA 2048)
	SAPub         string
	TokenFile     string // tokens.csv: static bearer tokens
	ProxyCert     string // front-proxy-client.crt: the aggregator's client cert
	ProxyKey      string
	AdminToken    string
	ControllerTok string
}

func ensurePKI(dataDir string, serviceIP net.IP) (*pki, error) {
	dir := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		Dir:         dir,
		CACert:      filepath.Join(dir, "ca.crt"),
		CAKey:       filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "apiserver.crt"),
		ServingKey:  filepath.Join(dir, "apiserver.key"),
		SAKey:       filepath.Join(dir, "sa.key"),
		SAPub:       filepath.Join(dir, "sa.pub"),
		TokenFile:   filepath.Join(dir, "tokens.csv"),
		ProxyCert:   filepath.Join(dir, "front-proxy-client.crt"),
		ProxyKey:    filepath.Join(dir, "front-proxy-client.key"),
	}
	if !exists(p.CACert) || !exists(p.CAKey) {
		if err := p.writeCA(); err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		os.Remove(p.ServingCert) // signed by the old CA, if any
		os.Remove(p.ProxyCert)
	}
	if !exists(p.ServingCert) || !exists(p.ServingKey) {
		if err := p.writeServing(serviceIP); err != nil {
			return nil, fmt.Errorf("serving cert: %w", err)
		}
	}
	if !exists(p.ProxyCert) || !exists(p.ProxyKey) {
		if err := p.SignClientCert("front-proxy-client", nil, p.ProxyCert, p.ProxyKey); err != nil {
			return nil, fmt.Errorf("front-proxy client cert: %w", err)
		}
	}
	if !exists(p.SAKey) || !exists(p.SAPub) {
		if err := p.writeSAKeys(); err != nil {
			return nil, fmt.Errorf("service-account keys: %w", err)
		}
	}
	if err := p.ensureTokens(); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	return p, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func (p *pki) writeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "slicecache-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(p.CAKey, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return writePEM(p.CACert, "CERTIFICATE", der, 0o644)
}

func (p *pki) loadCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(p.CACert)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(p.CAKey)
	if err != nil {
		return nil, nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, nil, errors.New("bad PEM in CA files")
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// SignClientCert issues a client certificate (CN = user, O = groups) from
// the cluster CA, e.g. for a node shim authenticating as system:node:NAME.
func (p *pki) SignClientCert(user string, groups []string, certPath, keyPath string) error {
	ca, caKey, err := p.loadCA()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(keyPath, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func (p *pki) writeServing(serviceIP net.IP) error {
	ca, caKey, err := p.loadCA()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), serviceIP},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(p.ServingKey, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return writePEM(p.ServingCert, "CERTIFICATE", der, 0o644)
}

func (p *pki) writeSAKeys() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(p.SAKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return err
	}
	return writePEM(p.SAPub, "PUBLIC KEY", pub, 0o644)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ensureTokens keeps the tokens of an existing file: token,user,uid,"groups".
func (p *pki) ensureTokens() error {
	adminPath := filepath.Join(p.Dir, "admin.token")
	cmPath := filepath.Join(p.Dir, "controller-manager.token")
	if exists(adminPath) && exists(cmPath) && exists(p.TokenFile) {
		a, err := os.ReadFile(adminPath)
		if err != nil {
			return err
		}
		c, err := os.ReadFile(cmPath)
		if err != nil {
			return err
		}
		p.AdminToken, p.ControllerTok = string(a), string(c)
		return nil
	}
	p.AdminToken, p.ControllerTok = randomToken(), randomToken()
	csv := fmt.Sprintf("%s,admin,admin-uid,\"system:masters\"\n%s,system:kube-controller-manager,kcm-uid\n",
		p.AdminToken, p.ControllerTok)
	if err := os.WriteFile(adminPath, []byte(p.AdminToken), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(cmPath, []byte(p.ControllerTok), 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.TokenFile, []byte(csv), 0o600)
}

// kubeconfig renders a kubeconfig for server with the CA inline and a token.
func (p *pki) kubeconfig(server, user, token string) ([]byte, error) {
	ca, err := os.ReadFile(p.CACert)
	if err != nil {
		return nil, err
	}
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: slicecache
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: slicecache
  context:
    cluster: slicecache
    user: %s
current-context: slicecache
`, server, base64.StdEncoding.EncodeToString(ca), user, token, user)), nil
}
