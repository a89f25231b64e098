"""The import job lifecycle: create, claim, checkpoint, finish, cancel and sweep."""
