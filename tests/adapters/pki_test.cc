// The pool's CA: a server certificate and a node's client certificate verify against the CA
// that issued them and no other; the CA's hash (kubeadm's form) is stable and names its key;
// validity is what was asked.
#include <gtest/gtest.h>

#include <chrono>

#include "adapters/pki.h"

namespace gp {
namespace {

TEST(PkiTest, IssuedCertificatesVerifyAgainstTheirCaOnly) {
  auto ca = MakeCa("gpupool CA", 3650);
  ASSERT_TRUE(ca) << ca.error().message();
  EXPECT_NE(ca->cert_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE(ca->key_pem.find("PRIVATE KEY"), std::string::npos);
  auto server = IssueCert(*ca, "gpupool server", {"127.0.0.1", "localhost"}, CertUse::kServer, 365);
  ASSERT_TRUE(server) << server.error().message();
  auto node = IssueCert(*ca, "node-a", {}, CertUse::kClient, 30);
  ASSERT_TRUE(node) << node.error().message();
  EXPECT_TRUE(VerifyCert(ca->cert_pem, server->cert_pem).ok());
  EXPECT_TRUE(VerifyCert(ca->cert_pem, node->cert_pem).ok());
  EXPECT_TRUE(VerifyCert(ca->cert_pem, ca->cert_pem).ok()) << "the CA is its own root";

  auto other = MakeCa("another CA", 30);
  ASSERT_TRUE(other);
  Status s = VerifyCert(other->cert_pem, server->cert_pem);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("certificate refused"), std::string::npos) << s.message();
  auto forged = IssueCert(*other, "node-a", {}, CertUse::kClient, 30);
  ASSERT_TRUE(forged);
  EXPECT_FALSE(VerifyCert(ca->cert_pem, forged->cert_pem).ok()) << "a node certificate from another CA is refused";
}

TEST(PkiTest, CaHashIsStableAndNamesTheKey) {
  auto ca = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(ca);
  auto h1 = PublicKeyHash(ca->cert_pem);
  auto h2 = PublicKeyHash(ca->cert_pem);
  ASSERT_TRUE(h1 && h2);
  EXPECT_EQ(*h1, *h2);
  EXPECT_EQ(h1->size(), 7u + 64u);
  EXPECT_EQ(h1->rfind("sha256:", 0), 0u);
  auto other = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(other);
  EXPECT_NE(*PublicKeyHash(other->cert_pem), *h1) << "another key, another hash";
  // A certificate issued by the CA has a hash of its own key, not the CA's.
  auto node = IssueCert(*ca, "n", {}, CertUse::kClient, 10);
  ASSERT_TRUE(node);
  EXPECT_NE(*PublicKeyHash(node->cert_pem), *h1);
}

TEST(PkiTest, ValidityIsWhatWasAskedAndBadInputIsRefused) {
  auto ca = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(ca);
  auto node = IssueCert(*ca, "n", {}, CertUse::kClient, 30);
  ASSERT_TRUE(node);
  auto until = NotAfterMs(node->cert_pem);
  ASSERT_TRUE(until);
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(static_cast<double>(*until - now), 30.0 * 86'400'000, 120'000.0);
  EXPECT_FALSE(MakeCa("x", 0));
  EXPECT_FALSE(IssueCert(*ca, "n", {}, CertUse::kClient, 5000));
  EXPECT_FALSE(PublicKeyHash("not a certificate"));
  EXPECT_FALSE(VerifyCert(ca->cert_pem, "garbage").ok());
  EXPECT_FALSE(IssueCert(CertKey{.cert_pem = ca->cert_pem, .key_pem = "no key"}, "n", {}, CertUse::kClient, 1));
}

// A node's key stays on the node: it sends a CSR, and the CA signs the key in it under the
// name the server gives (not the one the CSR asks for), for the seconds asked.
TEST(PkiTest, CsrIsSignedForItsKeyUnderTheServersName) {
  auto ca = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(ca);
  auto csr = MakeCsr("node-a");
  ASSERT_TRUE(csr) << csr.error().message();
  EXPECT_NE(csr->csr_pem.find("BEGIN CERTIFICATE REQUEST"), std::string::npos);
  auto cert = SignClientCsr(*ca, csr->csr_pem, "node-b", 90);
  ASSERT_TRUE(cert) << cert.error().message();
  EXPECT_TRUE(VerifyCert(ca->cert_pem, *cert).ok());
  auto info = ReadCertInfo(*cert);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->common_name, "node-b") << "the server names the node, not the request";
  EXPECT_FALSE(info->serial.empty());
  EXPECT_NEAR(static_cast<double>(info->not_after_ms - info->not_before_ms), 99'000.0, 1'000.0) << "90 s, and 9 s of skew before";
  auto again = SignClientCsr(*ca, csr->csr_pem, "node-b", 90);
  ASSERT_TRUE(again);
  EXPECT_NE(ReadCertInfo(*again)->serial, info->serial) << "each certificate its own serial";

  // A request whose signature does not match its key (tampered) is refused, and so is junk.
  std::string tampered = csr->csr_pem;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(SignClientCsr(*ca, tampered, "node-a", 60));
  auto junk = SignClientCsr(*ca, "junk", "node-a", 60);
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message().find("csr"), std::string::npos) << junk.error().message();
  EXPECT_FALSE(SignClientCsr(*ca, csr->csr_pem, "node-a", 0));
}

}  // namespace
}  // namespace gp
