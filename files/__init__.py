"""A person's home on a cluster, read and written as them on the head node: browse, edit, upload, download."""
