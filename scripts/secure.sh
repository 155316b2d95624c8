#!/usr/bin/env bash
# Test credentials for the secured broker listeners (kafka.sh, nats.sh): a CA and a server
# certificate for 127.0.0.1, a client certificate, an expired client certificate, a second CA
# nobody trusts and a client certificate it signed, random passwords, an Event Hubs connection string and a NATS user nkey.
#
#   scripts/secure.sh make    # once per run directory; later calls reuse what is there
#   scripts/secure.sh dir     # where it all is ($GRAPHBRIDGE_RUN/secure)
#
# Made with openssl and Python's standard library only. Nothing here is a real secret: the
# files live in the brokers' run directory and die with it.
set -euo pipefail

DIR=${GRAPHBRIDGE_RUN:-/tmp/graphbridge-brokers}/secure

log() { echo "secure.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# cert NAME CN EXTENSIONS [openssl ca date options...]: a key and a certificate signed by the CA.
cert() {
  local name=$1 cn=$2 ext=$3
  shift 3
  openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$name.ext"
  # `openssl ca` (not `x509 -req`) because only it sets arbitrary validity dates in OpenSSL 3.0.
  openssl ca -batch -config ca.cnf -extfile "$name.ext" -in "$name.csr" -out "$name.pem" -notext "$@" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

# An NKey user seed and public key from an openssl Ed25519 key (the NKey encoding: a prefix,
# the 32 raw bytes, CRC-16/XMODEM little-endian, base32 without padding).
nkey() {
  openssl genpkey -algorithm ed25519 -outform DER -out nkey.der
  openssl pkey -inform DER -in nkey.der -pubout -outform DER -out nkey.pub.der
  python3 - <<'PY'
import base64, struct
def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc
def enc(raw):
    return base64.b32encode(raw + struct.pack("<H", crc16(raw))).decode().rstrip("=")
seed = open("nkey.der", "rb").read()[-32:]
pub = open("nkey.pub.der", "rb").read()[-32:]
USER, SEED = 20 << 3, 18 << 3
open("nats-user.nk", "w").write(enc(bytes([SEED | USER >> 5, (USER & 31) << 3]) + seed) + "\n")
open("nats-user.pub", "w").write(enc(bytes([USER]) + pub) + "\n")
PY
  rm -f nkey.der nkey.pub.der
}

password() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; }

make() (
  [[ -f $DIR/.complete ]] && exit 0
  mkdir -p "${DIR%/*}"
  # kafka.sh and nats.sh may both ask at once.
  exec 9>"$DIR.lock"
  flock -w 60 9 || die "timed out waiting for another $0"
  [[ -f $DIR/.complete ]] && exit 0
  command -v openssl >/dev/null || die "openssl not found (apt-get install -y openssl)"
  rm -rf "$DIR.tmp"
  mkdir -p "$DIR.tmp"
  (
    cd "$DIR.tmp"
    touch index.txt
    echo 1000 >serial
    cat >ca.cnf <<'EOF'
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_days = 3650
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=graphbridge test CA" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 3650 \
      -subj "/CN=graphbridge untrusted CA" 2>/dev/null
    cert server 127.0.0.1 "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
    cert client graphbridge "extendedKeyUsage=clientAuth"
    cert expired-client graphbridge "extendedKeyUsage=clientAuth" \
      -startdate 20200101000000Z -enddate 20200201000000Z
    # A client certificate from the CA nobody trusts: the broker refuses it during the handshake.
    openssl req -new -newkey rsa:2048 -nodes -keyout untrusted-client.key -subj "/CN=graphbridge" \
      -out untrusted-client.csr 2>/dev/null
    # (an extension makes it X.509 v3: rustls will not load a v1 client certificate)
    echo "extendedKeyUsage=clientAuth" >untrusted-client.ext
    openssl x509 -req -in untrusted-client.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial \
      -days 3650 -extfile untrusted-client.ext -out untrusted-client.pem 2>/dev/null
    rm -f untrusted-client.csr untrusted-client.ext other-ca.srl
    # Kafka's broker reads its key and certificate from a PKCS#12 keystore.
    password >keystore.password
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name server \
      -out server.p12 -passout file:keystore.password
    password >kafka-scram.password
    password >kafka-plain.password
    password >nats.password
    # What Graph's subscription names for an event hub; the test "hub" accepts exactly this.
    echo "Endpoint=sb://graphbridge-test.servicebus.windows.net/;SharedAccessKeyName=graphbridge;SharedAccessKey=$(password);EntityPath=graph" >eventhub.connection-string
    nkey
    rm -f ./*.old index.txt* serial* ./[0-9A-F][0-9A-F][0-9A-F][0-9A-F].pem
    chmod 600 ./*.key ./*.password ./*.nk eventhub.connection-string
  )
  mv "$DIR.tmp" "$DIR"
  touch "$DIR/.complete"
  log "made test CA, certificates and credentials in $DIR"
)

case "${1:-}" in
  make) make ;;
  dir) echo "$DIR" ;;
  *) echo "usage: $0 make|dir" >&2; exit 2 ;;
esac
