"""Who calls the log API and what they may see. Visibility follows the *key*, not the
user: a proxy key belongs to one member of one project, so it sees that project only
(SPEC §7). A member's key sees their own calls there; a lead's key also sees every
member's calls in that project. The user's other memberships are never consulted: a
lead who adds a user of another project to their own and receives that user's new key
must not see the other project through it. The filters are built here from the key; a
``user`` given in the query string is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from functions.core.budget import Topup
from functions.core.errors import PermissionDenied
from functions.core.records import Caller
from functions.store import reports


@dataclass(frozen=True)
class Viewer:
    """Who calls, as far as their key says: one user in one project."""

    user: str
    name: str
    project: str
    role: str
    budget_nano: int | None
    topups: tuple[Topup, ...] = ()  # the member's, added to their budget

    @property
    def lead(self) -> bool:
        return self.role == "lead"

    @classmethod
    def of(cls, ctx: Caller) -> Viewer:
        return cls(
            ctx.user.id,
            ctx.user.name,
            ctx.project.id,
            ctx.member.role,
            ctx.member.budget_nano,
            ctx.member.topups,
        )


def filters_for(viewer: Viewer, args: Mapping[str, str]) -> reports.Filters:
    """The filters of a log API call: the key's project always, and the key's user unless
    a lead asks for the whole project or names one of its members; another project, or
    another member asked by a plain member, is a 403. ``user`` in ``args`` is ignored."""
    base = reports.parse_filters({k: args[k] for k in ("after", "before") if args.get(k)})
    project = reports.filter_value(args, "project")
    member = reports.filter_value(args, "member")
    if project is not None and project != viewer.project:
        raise PermissionDenied(
            f"This key belongs to project '{viewer.project}'; it sees "
            f"nothing of project '{project[:100]}'.",
            param="project",
        )
    if member is not None and member != viewer.user:
        if not viewer.lead:
            raise PermissionDenied("Only a project lead sees other members' calls.", param="member")
        user: str | None = member
    else:
        # a lead sees everyone in their project unless they name one member
        user = None if member is None and viewer.lead else viewer.user
    return reports.Filters(
        user=user,
        project=viewer.project,
        model=reports.filter_value(args, "model"),
        tag=reports.tag_value(args),
        key=reports.filter_value(args, "key"),
        after=base.after,
        before=base.before,
    )
