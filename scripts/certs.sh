#!/usr/bin/env bash
# Issues the certificates for zenoh over mutual TLS: one CA and a certificate per common
# name, each valid for localhost and 127.0.0.1 (add names with CERT_HOSTS, e.g.
# CERT_HOSTS="DNS:agg.example.cn,IP:10.0.0.5").
#
#   scripts/certs.sh DIR CN [CN...]
#
# An edge node's common name is its checkpoint id: the aggregator's access-control policy
# lets the holder publish only under that checkpoint's prefix. Other names (aggregator,
# operator tools) go in the aggregator's `zenoh.trusted_common_names` or nowhere.
# Writes DIR/ca.pem (+ ca.key) once and DIR/<CN>.pem + DIR/<CN>.key for each name missing;
# existing files are kept, so a second run changes nothing. Needs openssl.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR CN [CN...]" >&2; exit 2; }
command -v openssl >/dev/null || { echo "certs: openssl is missing; apt-get install openssl" >&2; exit 1; }
dir=$1; shift
mkdir -p "$dir"
umask 077
days=${CERT_DAYS:-825}
hosts="DNS:localhost,IP:127.0.0.1${CERT_HOSTS:+,$CERT_HOSTS}"

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days" -subj "/CN=traffic-analytics CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem"
  echo "certs: issued CA $dir/ca.pem"
fi
for cn in "$@"; do
  [[ "$cn" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "certs: common name '$cn' must be letters, digits, '.', '_' or '-'" >&2; exit 2; }
  if [ -s "$dir/$cn.pem" ] && [ -s "$dir/$cn.key" ]; then continue; fi
  ext=$(mktemp)
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$hosts" > "$ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$cn.key" 2>/dev/null
  openssl req -new -key "$dir/$cn.key" -subj "/CN=$cn" -out "$dir/$cn.csr"
  openssl x509 -req -in "$dir/$cn.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$ext" -out "$dir/$cn.pem" 2>/dev/null
  rm -f "$dir/$cn.csr" "$ext"
  echo "certs: issued $dir/$cn.pem (CN=$cn)"
done
