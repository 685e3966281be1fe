"""Peer servers for comparison: installed at run time into bench/.peers/ (never committed)."""
