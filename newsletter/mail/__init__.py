"""Mail out: one message per reader, the SMTP connection, the send over a pool of connections, confirmations."""
