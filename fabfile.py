"""The workshop's step 4, "Automate deployment", as a fabfile for Fabric's own `fab` (the tasks are lab's library).

From the project (fabric.yaml beside this file points Fabric at the lab's .lab/ssh_config):

    fab -H web1 status        which release web1 runs, and the one before (one line per host; -H web1,web2)
    fab deploy                app/ as a new release, one web host at a time out of the balancer (= `lab deploy`)
    fab rollback              every web host back on the release before (= `lab rollback`)

Read lab/deploy.py for what a deploy does: it is the same code `lab deploy` runs.
"""

from fabric import task
from invoke.exceptions import Exit

from lab import deploy as deploys
from lab.errors import LabError, exit_code_for, one_line
from lab.lifecycle import Project


def _lab_task(work):
    """A lab error ends `fab` with lab's one line and exit code, not a traceback."""
    try:
        return work()
    except LabError as error:
        raise Exit(f"fab: error: {one_line(error)}", code=exit_code_for(error)) from None


@task
def status(c):
    """Which release this host runs, the one before, and its app server: `fab -H web1 status`."""
    found = deploys.host_status(lambda command: c.run(command, hide=True, warn=True).stdout)
    print(deploys.describe(c.original_host, found))  # the name given to -H, not the address ssh_config maps it to


@task
def deploy(c):
    """Roll out app/ as a new release: one web host at a time drained, switched, health-checked, back in the pool."""
    report = _lab_task(lambda: deploys.deploy(Project.here(), print))
    print(report.summary("deployed"))


@task
def rollback(c):
    """Every web host back on the release before, the same rolling way."""
    report = _lab_task(lambda: deploys.rollback(Project.here(), print))
    print(report.summary("rolled back to"))
