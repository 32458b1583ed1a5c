import subprocess

from wharf.lab.lab import PidFile


def test_pid_file_finds_its_own_process_and_not_after_it_ends(tmp_path):
    proc = subprocess.Popen(["sleep", "30"])
    pid_file = PidFile(tmp_path / "sleep.pid")
    pid_file.write(proc.pid)
    assert pid_file.running_pid() == proc.pid
    proc.kill()
    proc.wait()
    assert pid_file.running_pid() is None


def test_a_reused_pid_is_not_taken_for_the_recorded_process(tmp_path):
    proc = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = PidFile(tmp_path / "sleep.pid")
        # Same pid, other start time: the process recorded there is gone.
        pid_file.path.write_text(f"{proc.pid} 1\n")
        assert pid_file.running_pid() is None
    finally:
        proc.kill()
        proc.wait()


def test_missing_or_garbled_pid_file_means_not_running(tmp_path):
    assert PidFile(tmp_path / "none.pid").running_pid() is None
    (tmp_path / "bad.pid").write_text("not a pid")
    assert PidFile(tmp_path / "bad.pid").running_pid() is None
