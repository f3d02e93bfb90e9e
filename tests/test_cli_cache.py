"""The CLI's persistent compilation cache: on for every command but ``bench``, off on ask.

``jax.config.update`` is recorded instead of applied, so that this process's own
compilations never start writing into a test's temporary directory.
"""

from __future__ import annotations

import argparse

import jax
import pytest

from gdjax import cli


@pytest.fixture
def updates(monkeypatch, tmp_path):
    seen: dict[str, object] = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: seen.__setitem__(name, value))
    monkeypatch.setenv("GDJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GDJAX_NO_COMPILE_CACHE", raising=False)
    return seen


def args(command: str, no_cache: bool = False) -> argparse.Namespace:
    return argparse.Namespace(command=command, no_compile_cache=no_cache)


def test_a_command_keeps_its_programs_in_the_user_cache_directory(updates, tmp_path):
    cli._use_compile_cache(args("reproduce"))
    assert updates["jax_compilation_cache_dir"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_cache_is_off_when_asked(updates, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("GDJAX_NO_COMPILE_CACHE", "1")
    cli._use_compile_cache(args("reproduce", no_cache=how == "flag"))
    assert "jax_compilation_cache_dir" not in updates


def test_bench_never_reads_a_cache_so_that_cold_means_compiling(updates):
    cli._use_compile_cache(args("bench"))
    assert updates == {}


def test_an_unwritable_cache_directory_runs_without_one(updates, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GDJAX_CACHE_DIR", str(blocker / "cache"))
    cli._use_compile_cache(args("reproduce"))
    assert updates == {}
