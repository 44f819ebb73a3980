//! CPU roles of a topology file: which CPUs run agents (`data_plane`), the
//! control runtime (`control`) and its blocking calls (`housekeeping`).
//!
//! Explicit `cpus` lists are claimed first; a CPU claimed twice is an
//! error. Class selectors (`class`, `count`) then take unclaimed CPUs of
//! their class: `control` and `housekeeping` from the highest-numbered CPU
//! down, `data_plane` from the lowest up, so the default layout keeps the
//! data plane on low CPUs and the control work on the last E-cores.
//! Without a `[roles]` table roles are derived: hosts of up to 2 CPUs put
//! every CPU in the data plane and run the core loop as a background task
//! queue on the first one; 3 or 4 CPUs give the last CPU of the least
//! capable class to the control role; 5 or more also give the one before it
//! to housekeeping.

use std::ops::Range;

use toml::Spanned;

use super::validate::{Ctx, parse_cpus};
use super::{CpuClass, CpuId, CpuSet, Role, TopologyError};
use crate::config::topology_file::{RoleSelector, RolesSection};

/// CPUs by role.
pub(super) struct Roles {
    pub data_plane: CpuSet,
    pub control: Option<CpuId>,
    pub housekeeping: CpuSet,
}

/// Resolves a `[roles]` table.
pub(super) fn resolve_roles(section: &RolesSection, ctx: &Ctx<'_>) -> Result<Roles, TopologyError> {
    let selectors: Vec<(Role, &Spanned<RoleSelector>)> = [
        (Role::DataPlane, Some(&section.data_plane)),
        (Role::Control, section.control.as_ref()),
        (Role::Housekeeping, section.housekeeping.as_ref()),
    ]
    .into_iter()
    .filter_map(|(role, sel)| sel.map(|s| (role, s)))
    .collect();
    let mut claimed: Vec<(CpuId, Role)> = Vec::new();
    let mut sets: Vec<(Role, CpuSet)> = Vec::new();
    for (role, sel) in &selectors {
        if let Some(set) = explicit_cpus(*role, sel, ctx)? {
            claim(
                &mut claimed,
                *role,
                &set,
                sel.get_ref()
                    .cpus
                    .as_ref()
                    .map_or(sel.span(), Spanned::span),
                ctx,
            )?;
            sets.push((*role, set));
        }
    }
    // Class selectors: control and housekeeping first, from the top.
    let order = [Role::Control, Role::Housekeeping, Role::DataPlane];
    for role in order {
        let Some((_, sel)) = selectors.iter().find(|(r, _)| *r == role) else {
            continue;
        };
        if sel.get_ref().cpus.is_some() {
            continue;
        }
        let set = class_cpus(role, sel, &claimed, ctx)?;
        claim(&mut claimed, role, &set, sel.span(), ctx)?;
        sets.push((role, set));
    }
    let take = |role: Role| {
        sets.iter()
            .find(|(r, _)| *r == role)
            .map(|(_, s)| s.clone())
    };
    let data_plane = take(Role::DataPlane).unwrap_or_default();
    if data_plane.is_empty() {
        return Err(ctx.invalid(
            section.data_plane.span(),
            "the data plane needs at least one CPU",
        ));
    }
    Ok(Roles {
        data_plane,
        control: take(Role::Control).and_then(|s| s.first()),
        housekeeping: take(Role::Housekeeping).unwrap_or_default(),
    })
}

fn explicit_cpus(
    role: Role,
    sel: &Spanned<RoleSelector>,
    ctx: &Ctx<'_>,
) -> Result<Option<CpuSet>, TopologyError> {
    let inner = sel.get_ref();
    match (&inner.cpus, &inner.class) {
        (Some(_), Some(class)) => Err(ctx.invalid(
            class.span(),
            format!("role {role} gives both `cpus` and `class`; keep one"),
        )),
        (None, None) => Err(ctx.invalid(
            sel.span(),
            format!(
                "role {role} needs `cpus = \"..\"` or `class = \"P\"|\"E\"|\"uniform\"|\"any\"`"
            ),
        )),
        (None, Some(_)) => Ok(None),
        (Some(list), None) => {
            if let Some(count) = &inner.count {
                return Err(ctx.invalid(count.span(), "`count` goes with `class`, not with `cpus`"));
            }
            let set = parse_cpus(list, ctx.file)?;
            let all = ctx.all_cpus();
            if let Some(cpu) = set.iter().find(|cpu| !all.contains(*cpu)) {
                return Err(TopologyError::CpuNotOnHost {
                    at: ctx.file.locate(list.span()),
                    cpu,
                    host: ctx.host.to_owned(),
                    host_cpus: super::describe_classes(ctx.classes),
                });
            }
            if role == Role::Control && set.len() != 1 {
                return Err(ctx.invalid(
                    list.span(),
                    format!("the control role is one CPU; this lists {}", set.len()),
                ));
            }
            if set.is_empty() {
                return Err(ctx.invalid(list.span(), format!("role {role} lists no CPU")));
            }
            Ok(Some(set))
        }
    }
}

fn class_cpus(
    role: Role,
    sel: &Spanned<RoleSelector>,
    claimed: &[(CpuId, Role)],
    ctx: &Ctx<'_>,
) -> Result<CpuSet, TopologyError> {
    let inner = sel.get_ref();
    let class = inner
        .class
        .as_ref()
        .expect("explicit_cpus rejected selectors without cpus or class");
    let pool = match class.get_ref().as_str() {
        "P" => class_set(ctx.classes, CpuClass::P),
        "E" => class_set(ctx.classes, CpuClass::E),
        "uniform" => class_set(ctx.classes, CpuClass::Uniform),
        "any" => ctx.all_cpus(),
        other => {
            return Err(ctx.invalid(
                class.span(),
                format!("unknown class {other:?}; use \"P\", \"E\", \"uniform\" or \"any\""),
            ));
        }
    };
    let left: CpuSet = pool
        .iter()
        .filter(|cpu| !claimed.iter().any(|(c, _)| c == cpu))
        .collect();
    let wanted = match &inner.count {
        Some(count) if *count.get_ref() == 0 => {
            return Err(ctx.invalid(count.span(), "`count` must be at least 1"));
        }
        Some(count) if role == Role::Control && *count.get_ref() != 1 => {
            return Err(ctx.invalid(
                count.span(),
                "the control role is one CPU; set `count = 1` or leave it out",
            ));
        }
        Some(count) => *count.get_ref() as usize,
        None if role == Role::Control => 1,
        None => left.len().max(1),
    };
    if left.len() < wanted {
        return Err(TopologyError::RoleShort {
            at: ctx.file.locate(sel.span()),
            role,
            class: class.get_ref().clone(),
            wanted,
            available: left.len(),
            left,
        });
    }
    Ok(if role == Role::DataPlane {
        left.iter().take(wanted).collect()
    } else {
        left.iter().rev().take(wanted).collect()
    })
}

fn class_set(classes: &[(CpuClass, CpuSet)], class: CpuClass) -> CpuSet {
    classes
        .iter()
        .find(|(c, _)| *c == class)
        .map(|(_, s)| s.clone())
        .unwrap_or_default()
}

fn claim(
    claimed: &mut Vec<(CpuId, Role)>,
    role: Role,
    set: &CpuSet,
    span: Range<usize>,
    ctx: &Ctx<'_>,
) -> Result<(), TopologyError> {
    for cpu in set.iter() {
        if let Some((_, first)) = claimed.iter().find(|(c, _)| *c == cpu) {
            return Err(TopologyError::RoleOverlap {
                at: ctx.file.locate(span),
                cpu,
                first: first.to_string(),
                second: role.to_string(),
            });
        }
        claimed.push((cpu, role));
    }
    Ok(())
}

/// Roles for a file without `[roles]` (see the module doc).
pub(super) fn derive_roles(classes: &[(CpuClass, CpuSet)]) -> Roles {
    let all = classes
        .iter()
        .fold(CpuSet::new(), |all, (_, s)| all.union(s));
    // The least capable class hosts control work: E if the host has it.
    let spare_pool = [CpuClass::E, CpuClass::Uniform, CpuClass::P]
        .into_iter()
        .map(|class| class_set(classes, class))
        .find(|set| !set.is_empty())
        .unwrap_or_default();
    let mut spare = spare_pool.iter().rev();
    let (control, housekeeping) = match all.len() {
        0..=2 => (None, CpuSet::new()),
        3 | 4 => (spare.next(), CpuSet::new()),
        _ => (spare.next(), spare.next().into_iter().collect()),
    };
    let taken: CpuSet = control.into_iter().chain(housekeeping.iter()).collect();
    Roles {
        data_plane: all.difference(&taken),
        control,
        housekeeping,
    }
}
