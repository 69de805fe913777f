"""Secrets the command line takes (deletion tokens, the new master key) need not be arguments, which
every local user can read in /proc/PID/cmdline; and --data-dir works after the sub-command too.

In-process through facedemo.app.cli.main, with the environment, the terminal and getpass faked."""
from __future__ import annotations

import io
import json

import pytest

from facedemo.app import cli
from privacy.keys import generate_master_key


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_secrets(monkeypatch):
    """No token or key in the environment, stdin not a terminal, and no prompt may appear."""
    for name in (cli.TOKEN_ENV, cli.NEW_KEY_ENV, "FACEDEMO_MASTER_KEY", "FACEDEMO_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())

    def no_prompt(prompt=""):
        raise AssertionError(f"asked for a secret: {prompt!r}")

    monkeypatch.setattr(cli.getpass, "getpass", no_prompt)


@pytest.fixture
def tokens_seen(monkeypatch, no_secrets):
    """`export` and `forget` against a stand-in vault and service that record the token they get."""
    seen: list[tuple[str, str, str]] = []

    class Vault:
        def export(self, subject_id, token):
            seen.append(("export", subject_id, token))
            return {"subject_id": subject_id}

    class Service:
        def forget(self, subject_id, token):
            seen.append(("forget", subject_id, token))
            return {"subject_id": subject_id, "key_destroyed": True}

        def close(self):
            pass

    monkeypatch.setattr(cli, "_with_vault", lambda config, action: action(Vault()))
    monkeypatch.setattr(cli, "_service", lambda config: Service())
    return seen


@pytest.mark.parametrize("command", ["forget", "export"])
def test_the_token_is_taken_from_FACEDEMO_TOKEN(command, tokens_seen, monkeypatch, capsys):
    monkeypatch.setenv(cli.TOKEN_ENV, "token-from-env\n")
    assert cli.main([command, "subj-1"]) == 0
    assert tokens_seen == [(command, "subj-1", "token-from-env")]
    assert json.loads(capsys.readouterr().out)["subject_id"] == "subj-1"


@pytest.mark.parametrize("command", ["forget", "export"])
def test_without_a_token_a_terminal_user_is_asked_for_it(command, tokens_seen, monkeypatch):
    prompts = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": prompts.append(prompt) or " typed-token ")
    assert cli.main([command, "subj-1"]) == 0
    assert tokens_seen == [(command, "subj-1", "typed-token")]
    assert len(prompts) == 1 and "token" in prompts[0] and "not shown" in prompts[0]


@pytest.mark.parametrize("command", ["forget", "export"])
def test_without_a_token_or_a_terminal_the_error_is_one_line(command, tokens_seen, capsys):
    assert cli.main([command, "subj-1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: no deletion token")
    assert cli.TOKEN_ENV in err and tokens_seen == []


def test_an_empty_answer_at_the_prompt_is_an_error(tokens_seen, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": "")
    assert cli.main(["forget", "subj-1"]) == 1 and tokens_seen == []
    assert capsys.readouterr().err.strip() == "error: no deletion token (or the operator's admin token) given"


@pytest.mark.parametrize("command", ["forget", "export"])
def test_token_on_the_command_line_still_works_and_wins(command, tokens_seen, monkeypatch):
    monkeypatch.setenv(cli.TOKEN_ENV, "token-from-env")
    assert cli.main([command, "subj-1", "--token", "token-from-argv"]) == 0
    assert tokens_seen == [(command, "subj-1", "token-from-argv")]


@pytest.mark.parametrize("command, variable", [("forget", "FACEDEMO_TOKEN"), ("export", "FACEDEMO_TOKEN"),
                                               ("rotate-key", "FACEDEMO_NEW_MASTER_KEY")])
def test_help_says_arguments_are_visible_to_other_users_and_names_the_variable(command, variable, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even at hyphens
    assert "Otherusersofthismachinecanreadcommand-linearguments" in text and f"prefer{variable}" in text


# ------------------------------------------------------------------------------ rotate-key


@pytest.fixture
def vault_dir(tmp_path, monkeypatch, no_secrets):
    """A vault (no subjects) under a master key given in the environment; the key is returned too."""
    key = generate_master_key()
    monkeypatch.setenv("FACEDEMO_MASTER_KEY", key)
    assert cli.main(["audit", "--verify", "--data-dir", str(tmp_path)]) == 0
    return tmp_path, key


def opens_with(data_dir, key, monkeypatch) -> bool:
    monkeypatch.setenv("FACEDEMO_MASTER_KEY", key)
    return cli.main(["--data-dir", str(data_dir), "audit", "--verify"]) == 0


def test_rotate_key_takes_the_new_key_from_the_environment_and_says_to_restart_the_app(vault_dir, monkeypatch, capsys):
    data_dir, old = vault_dir
    new = generate_master_key()
    monkeypatch.setenv(cli.NEW_KEY_ENV, new)
    capsys.readouterr()
    assert cli.main(["rotate-key", "--data-dir", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    assert new not in out + err  # the operator chose it: never echoed
    assert "Running app processes still hold the old key" in err and "restart every app process" in err
    assert "until restarted with the new one" in err and "FACEDEMO_MASTER_KEY" in err
    monkeypatch.delenv(cli.NEW_KEY_ENV)
    assert opens_with(data_dir, new, monkeypatch) and not opens_with(data_dir, old, monkeypatch)


def test_rotate_key_with_new_key_on_the_command_line_still_works(vault_dir, monkeypatch):
    data_dir, old = vault_dir
    new = generate_master_key()
    assert cli.main(["rotate-key", "--new-key", new, "--data-dir", str(data_dir)]) == 0
    assert opens_with(data_dir, new, monkeypatch)


def test_rotate_key_without_a_key_generates_one_and_prints_it_once(vault_dir, monkeypatch, capsys):
    data_dir, old = vault_dir
    capsys.readouterr()
    assert cli.main(["rotate-key", "--data-dir", str(data_dir)]) == 0
    out, err = capsys.readouterr()
    new = out.strip()
    assert len(out.splitlines()) == 1 and new != old and "restart every app process" in err
    assert opens_with(data_dir, new, monkeypatch)


# ------------------------------------------------------------------------------ --data-dir


def test_data_dir_is_accepted_after_the_sub_command(tmp_path, monkeypatch, no_secrets):
    monkeypatch.setenv("FACEDEMO_MASTER_KEY", generate_master_key())
    after, before = tmp_path / "after", tmp_path / "before"
    assert cli.main(["audit", "--verify", "--data-dir", str(after)]) == 0
    assert cli.main(["--data-dir", str(before), "audit", "--verify"]) == 0
    assert any(after.iterdir()) and any(before.iterdir())


def test_data_dir_after_the_sub_command_wins_over_one_before(tmp_path):
    args = cli.build_parser().parse_args(["--data-dir", "A", "enroll", "Ada", "x.jpg", "--consent", "--data-dir", "B"])
    assert args.data_dir == "B" and args.images == ["x.jpg"] and args.consent
    args = cli.build_parser().parse_args(["--data-dir", "A", "enroll", "Ada", "x.jpg"])
    assert args.data_dir == "A"
    assert cli.build_parser().parse_args(["audit"]).data_dir is None
