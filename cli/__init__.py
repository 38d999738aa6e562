"""The ``skysearch`` command: thin typer layer (parse -> call the library -> render)."""
