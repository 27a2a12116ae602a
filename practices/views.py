"""Staff security pages: the MFA step-up (and first enrolment) and the subject access download.

Thin, like the portal: parse the form, call `practices.mfa` or
`practices.privacy`, render. Mounted at /staff/ (namespace "staff").
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from audit.actors import Actor
from practices import access, mfa, privacy
from practices.models import Patient, StaffProfile
from practices.roles import Perm


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(
            attrs={"inputmode": "numeric", "autocomplete": "one-time-code", "pattern": "[0-9 ]*"}
        ),
    )


class EnrolForm(CodeForm):
    password = forms.CharField(
        label="Your password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    field_order = ["password", "code"]


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("portal:home")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def mfa_step_up(request):
    """Confirm it is you with a TOTP code; enrol an authenticator first if there is none."""
    if not StaffProfile.objects.filter(user_id=request.user.pk).exists():
        raise PermissionDenied("Only staff accounts use this page.")
    enrolled = mfa.is_enrolled(request.user)
    form_class = CodeForm if enrolled else EnrolForm
    form = form_class(request.POST or None)
    enrolment = None
    if request.method == "POST" and form.is_valid():
        try:
            if enrolled:
                mfa.mfa_verify(user=request.user, code=form.cleaned_data["code"])
            elif not request.user.check_password(form.cleaned_data["password"]):
                raise mfa.MfaError("Your password is not right.", code="wrong_password")
            else:
                mfa.mfa_enrol_confirm(user=request.user, code=form.cleaned_data["code"])
        except mfa.MfaError as error:
            form.add_error("password" if error.code == "wrong_password" else "code", error.message)
        else:
            messages.success(request, "Thank you: identity confirmed.")
            return redirect(_next(request))
    if not enrolled:
        enrolment = mfa.mfa_enrol_start(user=request.user)
    return render(
        request,
        "portal/mfa.html",
        {"form": form, "enrolment": enrolment, "next": _next(request)},
        status=400 if form.errors else 200,
    )


@never_cache
@login_required
@require_GET
def patient_data_export(request, patient_id):
    """The subject access export of one patient as a JSON download (compliance / admin role)."""
    user = request.user
    if not access.has_perm(user, Perm.VIEW_AUDIT_LOG):
        raise PermissionDenied("You do not have permission to export patient data.")
    patient = (
        Patient.objects.filter(pk=patient_id, practice_id__in=access.practice_ids_for(user))
        .select_related("practice")
        .first()
    )
    if patient is None:
        raise Http404("No such patient.")
    document = privacy.subject_access_export(patient_id=patient.id, actor=Actor.staff(user))
    body = json.dumps(document, cls=DjangoJSONEncoder, indent=2, sort_keys=True)
    response = HttpResponse(body, content_type="application/json")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = (
        f'attachment; filename="subject-access-{patient.id}-{stamp}.json"'
    )
    return response
