"""Local sample upstreams so the quickstart answers offline, with no keys."""
