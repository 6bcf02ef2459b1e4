"""The Hypercore wire, one layer a module (wire.md): `framing` (uint24 frames), `noise` (Noise XX
over Ed25519), `secret_stream` (`SecretStream`: handshake, header, encrypted messages,
keep-alives), `protomux` (`Mux`, `Channel`: channels, control messages, batches), `keys` (a
store's stable Noise key pair), then the Hypercore channel (`messages`, `replicator`)."""
