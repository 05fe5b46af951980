"""camserve: the client SDK of the camserve explanation service."""
