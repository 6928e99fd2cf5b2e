"""Admin of load-flow runs: read-only (runs are started through the API, the command or the schedule), with their pictures inline.

The change page of a succeeded snapshot, time-series or what-if run shows the voltage profile along
the feeders and the grid map coloured by voltage and loading, drawn from the run's stored results by
`twin.plots` and served by an admin view (staff with view permission only).
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from twin import models, plots

Run = models.LoadFlowRun
PICTURES = ("voltage-profile", "grid")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Results are written by the engine only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Run)
class LoadFlowRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "grid", "kind", "status", "at", "start", "end", "steps_done", "steps_total", "trigger", "created_at"]
    list_filter = ["kind", "status", "trigger", "grid"]
    search_fields = ["grid__name", "error"]
    readonly_fields = ["pictures", "results"]
    list_per_page = 50

    def get_urls(self):
        view = self.admin_site.admin_view(self.picture_view)
        return [path("<int:run_id>/plots/<str:picture>.png", view, name="twin_loadflowrun_plot"), *super().get_urls()]

    def picture_view(self, request, run_id: int, picture: str):
        run = get_object_or_404(Run.objects.select_related("grid"), pk=run_id)
        if not self.has_view_permission(request, run):
            return HttpResponse(status=403)
        if picture not in PICTURES or run.status != Run.Status.SUCCEEDED:
            return HttpResponseBadRequest("no such picture for this run")
        try:
            return HttpResponse(plots.run_picture(run, picture), content_type="image/png")
        except plots.PictureError as exc:
            return HttpResponseBadRequest(str(exc))

    @admin.display(description="Pictures")
    def pictures(self, run: Run):
        if run.pk is None or run.status != Run.Status.SUCCEEDED or run.kind == Run.Kind.HOSTING_CAPACITY:
            return "—"
        urls = [(reverse("admin:twin_loadflowrun_plot", args=[run.pk, name]), name) for name in PICTURES]
        return format_html_join("", '<a href="{0}"><img src="{0}" alt="{1}" style="max-width: 640px; margin: 0 8px 8px 0"></a>', urls)

    @admin.display(description="Results")
    def results(self, run: Run):
        if run.pk is None:
            return "—"
        violations = reverse("admin:twin_violation_changelist") + f"?run__id__exact={run.pk}"
        links = format_html('<a href="{}">{} violation period(s)</a>', violations, run.violations.count())
        if run.kind == Run.Kind.HOSTING_CAPACITY:
            capacities = reverse("admin:twin_hostingcapacityresult_changelist") + f"?run__id__exact={run.pk}"
            links = format_html('{} · <a href="{}">hosting capacity per bus</a>', links, capacities)
        return links


@admin.register(models.Violation)
class ViolationAdmin(ReadOnlyAdmin):
    list_display = ["asset_iri", "element", "quantity", "value", "limit", "severity", "start", "end", "steps", "run"]
    list_filter = ["quantity", "severity", "element", "grid"]
    search_fields = ["asset_iri"]
    raw_id_fields = ["run", "grid"]
    list_per_page = 100


@admin.register(models.HostingCapacityResult)
class HostingCapacityResultAdmin(ReadOnlyAdmin):
    list_display = ["bus", "pv_kw", "pv_limited_by", "pv_worst_at", "load_kw", "load_limited_by", "load_worst_at", "run"]
    list_filter = ["pv_limited_by", "load_limited_by"]
    search_fields = ["bus__name", "bus__iri"]
    raw_id_fields = ["run", "bus"]
    list_per_page = 100
