"""What the tests read from a command's output."""


def one_error_line(capsys) -> str:
    """The one line a refused command wrote to stderr (it starts with ``error: ``)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]
