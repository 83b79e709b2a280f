"""A finished run read back and shown: the terminal tables, `raypipe recommend`'s advice and report.html."""
