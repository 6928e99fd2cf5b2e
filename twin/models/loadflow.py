"""Load-flow runs and their results: a run's life in a row, snapshot results per element, compact time series.

A run (`LoadFlowRun`) is queued → running → succeeded, or failed with its error. Nothing of a run's
results is visible before it succeeds: a failed run keeps no result rows (they are written in one
transaction with the status, or deleted with the failure).

Snapshot results are rows (`BusResult`, `BranchResult`) so they can be filtered in the database.
Time series results are float32 arrays per chunk of steps (`TimeSeriesChunk.arrays`, an uncompressed
`.npz` in a bytea): a year of 15-minute steps of SimBench `1-MV-urban--0-sw` (150 buses, 149 branches)
is 35,136 × (2 × 150 + 4 × 149) × 4 B ≈ 126 MB, where one row per value would be ~30 GB.

Result rows are written in bulk, 54k of them for a snapshot of a 10k-bus grid, so their references to the run and to
the bus carry no database constraint (`db_constraint=False`): PostgreSQL checked each of them at commit, 0.4–0.5 s of
a snapshot that must take under a second. The rules stay those of `on_delete`, which Django applies itself: deleting a
run deletes its rows, a bus with results cannot be deleted (it is retired: `twin.history`), and nothing in the project
deletes either by raw SQL. `tests/test_loadflow_storage.py` holds both rules.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from twin.models.grid import Bus, Grid


class LoadFlowRun(models.Model):
    """One load-flow job on a grid: what was asked (kind, time or period, parameters), how it went, what it used.

    `parameters` holds the voltage band (`vm_min_pu`, `vm_max_pu`), the loading limit
    (`max_loading_percent`, default each asset's own 100 %), and for what-if / hosting-capacity runs
    the scenario. `inputs` summarises where injections came from (measured / profile / last value /
    declared); `timings` are seconds per stage; `versions` the solver libraries.
    """

    class Kind(models.TextChoices):
        SNAPSHOT = "snapshot"
        TIMESERIES = "timeseries"
        WHATIF = "whatif"
        HOSTING_CAPACITY = "hosting_capacity"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    grid = models.ForeignKey(Grid, on_delete=models.CASCADE, related_name="loadflow_runs")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.SNAPSHOT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    at = models.DateTimeField(null=True, blank=True, help_text="Time of a snapshot (what-if and hosting capacity: worst time).")
    start = models.DateTimeField(null=True, blank=True, help_text="First step of a time series (inclusive).")
    end = models.DateTimeField(null=True, blank=True, help_text="End of a time series (exclusive).")
    step_minutes = models.PositiveIntegerField(default=15)
    parameters = models.JSONField(default=dict, blank=True)
    base_run = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="variants",
                                 help_text="For a what-if: the run of the unchanged twin it is compared with.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    trigger = models.CharField(max_length=10, default="api", help_text="api, command or schedule.")
    grid_version = models.PositiveIntegerField(null=True, blank=True, help_text="Version of the grid model the run solved.")
    version = models.ForeignKey("twin.GridVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="runs",
                                help_text="The pinned grid version the run solves (its number is `grid_version`).")
    telemetry_start = models.DateTimeField(null=True, blank=True, help_text="Earliest reading used.")
    telemetry_end = models.DateTimeField(null=True, blank=True, help_text="Latest reading used.")
    inputs = models.JSONField(default=dict, blank=True, help_text="Values per source: measured, profile, last_value, declared.")
    summary = models.JSONField(default=dict, blank=True, help_text="Extremes and totals of the results (vm_pu, loading_percent, p_mw).")
    solver = models.CharField(max_length=100, blank=True)
    versions = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per stage.")
    steps_total = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    layout = models.JSONField(default=dict, blank=True, help_text="IRIs of buses, lines and transformers in array order.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["grid", "status", "created_at"], name="loadflow_run_grid_idx")]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} of {self.grid_id} ({self.status})"

    @property
    def progress_percent(self) -> float:
        """Share of steps solved and stored, 0–100."""
        return 100.0 * self.steps_done / self.steps_total if self.steps_total else 0.0


class LoadFlowInput(models.Model):
    """Where one injection of a run came from: `measured` (a reading), `profile`, `last_value` or `declared`.

    Snapshot: p_mw / q_mvar are the values used (load convention for loads and storage charging,
    generation positive for static generators). Time series: the counts of steps per source.
    """

    class Source(models.TextChoices):
        MEASURED = "measured"
        PROFILE = "profile"
        LAST_VALUE = "last_value"
        DECLARED = "declared"

    run = models.ForeignKey(LoadFlowRun, on_delete=models.CASCADE, related_name="input_records", db_constraint=False)
    element = models.CharField(max_length=10, help_text="pandapower table: load, sgen or storage.")
    asset_iri = models.CharField(max_length=500)
    source = models.CharField(max_length=12, choices=Source.choices)
    p_mw = models.FloatField(null=True, blank=True)
    q_mvar = models.FloatField(null=True, blank=True)
    measured_steps = models.PositiveIntegerField(default=0)
    filled_steps = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "source"], name="loadflow_input_run_idx")]

    def __str__(self) -> str:
        return f"{self.asset_iri}: {self.source}"


class BusResult(models.Model):
    """Snapshot voltage of one bus: vm_pu, va_degree, and the net injection p_mw / q_mvar (load convention)."""

    run = models.ForeignKey(LoadFlowRun, on_delete=models.CASCADE, related_name="bus_results", db_constraint=False)
    # results never vanish: the bus is retired; the rule is Django's RESTRICT, not a database constraint (module docstring)
    bus = models.ForeignKey(Bus, on_delete=models.RESTRICT, related_name="+", db_constraint=False)
    vm_pu = models.FloatField(null=True)
    va_degree = models.FloatField(null=True)
    p_mw = models.FloatField(default=0.0)
    q_mvar = models.FloatField(default=0.0)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "vm_pu"], name="loadflow_bus_run_idx")]

    def __str__(self) -> str:
        return f"bus {self.bus_id}: {self.vm_pu} pu"


class BranchResult(models.Model):
    """Snapshot flow of one line or transformer, at its from (HV) end: p_mw, q_mvar, i_ka, loading_percent, losses."""

    class Element(models.TextChoices):
        LINE = "line"
        TRAFO = "trafo"

    run = models.ForeignKey(LoadFlowRun, on_delete=models.CASCADE, related_name="branch_results", db_constraint=False)
    element = models.CharField(max_length=5, choices=Element.choices)
    asset_iri = models.CharField(max_length=500)
    p_from_mw = models.FloatField(null=True)
    q_from_mvar = models.FloatField(null=True)
    p_to_mw = models.FloatField(null=True)
    q_to_mvar = models.FloatField(null=True)
    i_ka = models.FloatField(null=True, help_text="Larger of the two end currents, kA.")
    loading_percent = models.FloatField(null=True)
    pl_mw = models.FloatField(null=True, help_text="Active losses, MW.")
    ql_mvar = models.FloatField(null=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "element", "loading_percent"], name="loadflow_branch_run_idx")]

    def __str__(self) -> str:
        return f"{self.element} {self.asset_iri}: {self.loading_percent} %"


class TimeSeriesChunk(models.Model):
    """Results of `steps` consecutive steps from `start`: float32 arrays in an uncompressed .npz (see the module docstring).

    Arrays (steps × elements, order of `LoadFlowRun.layout`): `vm_pu`, `va_degree`; `line_p_from_mw`,
    `line_q_from_mvar`, `line_i_ka`, `line_loading_percent`, the same for `trafo_`; per step `p_load_mw`,
    `p_sgen_mw`, `p_ext_grid_mw`, `pl_mw` (float64). A chunk is claimed by one worker at a time
    (`status`), and a killed worker's chunk is redone by the redelivered task.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    run = models.ForeignKey(LoadFlowRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    start = models.DateTimeField()
    steps = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    arrays = models.BinaryField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True, help_text="Wall seconds to build inputs, solve and store.")

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="loadflow_chunk_unique")]

    def __str__(self) -> str:
        return f"chunk {self.index} of run {self.run_id} ({self.status})"


class Violation(models.Model):
    """A limit exceeded: voltage outside the band or loading above the limit, over a period of consecutive steps.

    `start`–`end` are the first and last step in violation (equal for a snapshot), `value` the worst
    value in that period, `limit` the limit it broke (vm_pu or loading_percent). Severity `major`
    when the worst value is past the limit by more than the run's `major_margin` (0.02 pu / 20 %).
    """

    class Quantity(models.TextChoices):
        VM_PU = "vm_pu"
        LOADING_PERCENT = "loading_percent"

    class Severity(models.TextChoices):
        MINOR = "minor"
        MAJOR = "major"

    run = models.ForeignKey(LoadFlowRun, on_delete=models.CASCADE, related_name="violations")
    grid = models.ForeignKey(Grid, on_delete=models.CASCADE, related_name="loadflow_violations")
    element = models.CharField(max_length=5, help_text="bus, line or trafo.")
    asset_iri = models.CharField(max_length=500)
    quantity = models.CharField(max_length=16, choices=Quantity.choices)
    start = models.DateTimeField()
    end = models.DateTimeField()
    steps = models.PositiveIntegerField(default=1)
    value = models.FloatField()
    limit = models.FloatField()
    severity = models.CharField(max_length=5, choices=Severity.choices)

    class Meta:
        ordering = ["run", "start", "id"]
        indexes = [models.Index(fields=["grid", "start", "end"], name="loadflow_violation_grid_idx")]

    def __str__(self) -> str:
        return f"{self.asset_iri} {self.quantity} {self.value:.4g} (limit {self.limit:.4g})"


class HostingCapacityResult(models.Model):
    """Largest PV and largest load (or EV charging) in kW that one bus takes without any violation, at its worst step.

    `pv_limited_by` / `load_limited_by` say what stopped it: `vm_pu`, `loading_percent`, `not_converged`,
    `search_limit` or `base_case` (the grid breaks a limit at that step even without an addition);
    `pv_worst_at` / `load_worst_at` are the steps of the period that set the capacity.
    """

    run = models.ForeignKey(LoadFlowRun, on_delete=models.CASCADE, related_name="hosting_results", db_constraint=False)
    # results never vanish: the bus is retired; the rule is Django's RESTRICT, not a database constraint (module docstring)
    bus = models.ForeignKey(Bus, on_delete=models.RESTRICT, related_name="+", db_constraint=False)
    pv_kw = models.FloatField()
    load_kw = models.FloatField()
    pv_limited_by = models.CharField(max_length=16, blank=True)
    load_limited_by = models.CharField(max_length=16, blank=True)
    pv_worst_at = models.DateTimeField(null=True, blank=True)
    load_worst_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"bus {self.bus_id}: PV {self.pv_kw:.0f} kW, load {self.load_kw:.0f} kW"
